"""The capture worklet's resampler, run in real Chromium on generated signals with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from tests.e2e.browser import chromium

pytestmark = pytest.mark.slow

RUN = """([rate, freq, amp, right]) => {
  const r = new PcmResampler(rate, 50), out = [], n = rate;  // one second, in 128-sample render quanta
  for (let i = 0; i < n; i += 128) {
    const l = new Float32Array(Math.min(128, n - i)), rr = new Float32Array(l.length);
    for (let k = 0; k < l.length; k++) {
      l[k] = amp * Math.sin(2 * Math.PI * freq * (i + k) / rate);
      rr[k] = right * l[k];
    }
    for (const p of r.push([l, rr])) out.push(...new Uint8Array(p.pcm));
  }
  const last = r.flush();
  if (last) out.push(...new Uint8Array(last.pcm));
  return out;
}"""


def spectrum_peak(pcm: np.ndarray) -> tuple[float, float]:
    window = np.hanning(len(pcm))
    mag = np.abs(np.fft.rfft(pcm * window))
    k = int(np.argmax(mag))
    return k * 16000 / len(pcm), float(mag[k])


@pytest.fixture(scope="module")
async def page(server):
    async with chromium() as browser:
        p = await browser.new_page()
        await p.goto(server.http + "/")
        await p.add_script_tag(url="/static/pcm-worklet.js")
        yield p


@pytest.mark.parametrize("rate", [44100, 48000, 16000])
async def test_sine_comes_out_at_16k_as_s16le(page, rate):
    raw = bytes(await page.evaluate(RUN, [rate, 1000, 0.5, 1]))
    pcm = np.frombuffer(raw, "<i2").astype(np.float64)  # explicitly little-endian
    assert abs(len(pcm) - 16000) <= 1
    freq, _ = spectrum_peak(pcm)
    assert abs(freq - 1000) <= 2
    steady = pcm[200:-200]
    assert abs(np.abs(steady).max() - 0.5 * 32767) < 0.02 * 32767  # unity gain in the pass band
    t = np.arange(len(pcm)) / 16000
    fit = np.linalg.lstsq(np.c_[np.sin(2 * np.pi * 1000 * t), np.cos(2 * np.pi * 1000 * t)], pcm, rcond=None)[0]
    residual = pcm[200:-200] - (np.c_[np.sin(2 * np.pi * 1000 * t), np.cos(2 * np.pi * 1000 * t)] @ fit)[200:-200]
    assert 20 * np.log10(np.abs(steady).std() / residual.std()) > 40  # a clean sine: SNR over 40 dB


async def test_tones_above_8k_do_not_fold_back(page):
    """A 12 kHz tone at 48 kHz would alias to 4 kHz without the low-pass; it must be at least 40 dB down."""
    raw = bytes(await page.evaluate(RUN, [48000, 12000, 0.5, 1]))
    pcm = np.frombuffer(raw, "<i2").astype(np.float64)
    assert np.sqrt(np.mean(pcm**2)) < 0.5 * 32767 / np.sqrt(2) * 10 ** (-40 / 20)


async def test_channels_are_averaged_and_clipped(page):
    cancel = np.frombuffer(bytes(await page.evaluate(RUN, [44100, 440, 0.5, -1])), "<i2")
    assert np.abs(cancel).max() <= 1  # left = -right: the downmix is silent
    loud = np.frombuffer(bytes(await page.evaluate(RUN, [44100, 200, 3.0, 1])), "<i2")
    assert loud.max() == 32767 and loud.min() == -32768  # clipped to full scale, no wrap-around
