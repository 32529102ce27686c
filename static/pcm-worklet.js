/* Microphone capture for the lecturer page: runs in the AudioWorklet (audio thread), turns whatever the device
 * gives (any rate, any channel count) into the wire format — 16 kHz mono s16le — and posts fixed-size packets.
 *
 * Why here and not on the main thread: the audio thread never stalls on layout or a busy tab, so no sample is lost;
 * and the main thread only ever sees ready-to-send packets.
 *
 * Resampling: a windowed-sinc low-pass at the input rate (cut-off 7.2 kHz, so nothing folds back below 8 kHz),
 * then linear interpolation at the 16 kHz output instants. The file also loads as a plain script (no
 * AudioWorkletProcessor there), which is how the tests check PcmResampler on a known sine.
 */
"use strict";

class PcmResampler {
  /**
   * @param {number} inRate device sample rate (e.g. 44100, 48000)
   * @param {number} packetMs length of one output packet (20–100 ms)
   */
  constructor(inRate, packetMs = 50, outRate = 16000) {
    this.step = inRate / outRate; // input samples per output sample
    this.packetSamples = Math.round((outRate * packetMs) / 1000);
    this.taps = inRate === outRate ? new Float32Array([1]) : PcmResampler.lowpass(7200 / inRate, 63);
    this.history = new Float32Array(this.taps.length - 1); // last raw samples, for the filter's memory
    this.prev = 0; // last filtered sample of the previous block
    this.pos = 0; // position of the next output sample, in input samples, relative to the current block start
    this.packet = new ArrayBuffer(this.packetSamples * 2);
    this.view = new DataView(this.packet);
    this.fill = 0;
    this.peak = 0;
    this.sumSquares = 0;
  }

  /** Blackman-windowed sinc low-pass, unity gain at DC; `cut` is the cut-off as a fraction of the input rate. */
  static lowpass(cut, n) {
    const taps = new Float32Array(n), mid = (n - 1) / 2;
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const x = i - mid;
      const sinc = x === 0 ? 2 * cut : Math.sin(2 * Math.PI * cut * x) / (Math.PI * x);
      const w = 0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (n - 1)) + 0.08 * Math.cos((4 * Math.PI * i) / (n - 1));
      taps[i] = sinc * w;
      sum += taps[i];
    }
    return taps.map((t) => t / sum);
  }

  /**
   * Feed one block of input channels (Float32Array each, same length). Returns the packets completed by it:
   * ArrayBuffers of s16le samples, each with its peak and RMS level (0–1) for the level meter.
   */
  push(channels) {
    const n = channels.length ? channels[0].length : 0;
    if (!n) return [];
    const mono = new Float32Array(n);
    for (const ch of channels) for (let i = 0; i < n; i++) mono[i] += ch[i] / channels.length;
    // Filter: y[i] = sum_k taps[k] * x[i - k], with x before the block taken from history.
    const h = this.history, taps = this.taps, hl = h.length, filtered = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      let acc = 0;
      for (let k = 0; k < taps.length; k++) {
        const j = i - k;
        acc += taps[k] * (j >= 0 ? mono[j] : h[hl + j]);
      }
      filtered[i] = acc;
    }
    if (hl) {
      if (n >= hl) h.set(mono.subarray(n - hl));
      else { h.copyWithin(0, n); h.set(mono, hl - n); }
    }
    const out = [];
    // Output instants at this.pos, this.pos + step, …; position -1 is the previous block's last sample.
    while (this.pos < n - 1 + 1e-9) {
      const i = Math.floor(this.pos), frac = this.pos - i;
      const a = i < 0 ? this.prev : filtered[i], b = filtered[Math.min(i + 1, n - 1)];
      const packet = this.write(a + (b - a) * frac);
      if (packet) out.push(packet);
      this.pos += this.step;
    }
    this.pos -= n;
    this.prev = filtered[n - 1];
    return out;
  }

  write(x) {
    const v = Math.max(-1, Math.min(1, x));
    this.view.setInt16(this.fill * 2, Math.round(v < 0 ? v * 32768 : v * 32767), true); // little-endian
    this.peak = Math.max(this.peak, Math.abs(v));
    this.sumSquares += v * v;
    return ++this.fill === this.packetSamples ? this.flush() : null;
  }

  /** The samples gathered so far as a (possibly short) packet, or null when there are none. */
  flush() {
    if (!this.fill) return null;
    const packet = { pcm: this.packet.slice(0, this.fill * 2), peak: this.peak,
                     rms: Math.sqrt(this.sumSquares / this.fill) };
    this.fill = 0;
    this.peak = 0;
    this.sumSquares = 0;
    return packet;
  }
}

if (typeof AudioWorkletProcessor === "function") {
  class PcmCaptureProcessor extends AudioWorkletProcessor {
    constructor(options) {
      super();
      this.resampler = new PcmResampler(sampleRate, (options.processorOptions || {}).packetMs || 50);
      this.port.onmessage = (e) => {
        if (e.data === "flush") {
          const packet = this.resampler.flush();
          this.port.postMessage(packet ? { ...packet, last: true } : { last: true },
                                packet ? [packet.pcm] : []);
        }
      };
    }

    process(inputs) {
      for (const packet of this.resampler.push(inputs[0] || [])) this.port.postMessage(packet, [packet.pcm]);
      return true;
    }
  }
  registerProcessor("pcm-capture", PcmCaptureProcessor);
} else {
  globalThis.PcmResampler = PcmResampler;
}
