"""LocalAgreement-2: commits, re-anchoring, finish and cut; word joining."""

from __future__ import annotations

import pytest

from realtime.core.agreement import HypWord, LocalAgreement, common_prefix, join_words, norm


def hyp(text: str, start: float = 0.0, step: float = 0.3) -> list[HypWord]:
    """Words of `text`, each `step` seconds long, back to back from `start`."""
    return [HypWord(w, start + i * step, start + (i + 1) * step) for i, w in enumerate(text.split())]


def texts(words: list[HypWord]) -> list[str]:
    return [w.text for w in words]


def test_first_hypothesis_commits_nothing() -> None:
    la = LocalAgreement()
    assert la.update(hyp("the quick brown")) == []
    assert la.committed == []
    assert texts(la.unstable) == ["the", "quick", "brown"]


def test_two_agreeing_hypotheses_commit_their_common_prefix() -> None:
    la = LocalAgreement()
    la.update(hyp("the quick brown"))
    assert texts(la.update(hyp("the quick brown fox"))) == ["the", "quick", "brown"]
    assert texts(la.unstable) == ["fox"]
    assert texts(la.update(hyp("the quick brown fox jumps"))) == ["fox"]
    assert texts(la.committed) == ["the", "quick", "brown", "fox"]
    assert texts(la.unstable) == ["jumps"]


def test_improbable_agreed_words_wait_and_hold_back_what_follows() -> None:
    def probable(text: str, probs: list[float]) -> list[HypWord]:
        return [HypWord(w.text, w.start, w.end, p) for w, p in zip(hyp(text), probs, strict=True)]

    la = LocalAgreement(min_prob=0.1)
    la.update(probable("many people think", [0.9, 0.8, 0.7]))
    # "the" agrees but the newer decode gives it 0.05: it and "mess" after it stay unstable.
    assert texts(la.update(probable("many people think the mess", [0.9, 0.9, 0.8, 0.05, 0.6]))) == [
        "many", "people", "think"]
    assert texts(la.unstable) == ["the", "mess"]
    la.update(probable("many people think the mess is", [0.9, 0.9, 0.8, 0.3, 0.6, 0.5]))  # the older 0.05 counts
    assert texts(la.committed) == ["many", "people", "think"]
    assert texts(la.update(probable("many people think the mess is here", [0.9] * 7))) == ["the", "mess", "is"]
    assert texts(LocalAgreement().update(probable("a b", [0.01, 0.01]))) == []  # first hypothesis: nothing
    ungated = LocalAgreement()
    ungated.update(probable("a b", [0.01, 0.01]))
    assert texts(ungated.update(probable("a b c", [0.01, 0.01, 0.5]))) == ["a", "b"]


def test_disagreement_at_the_first_word_commits_nothing() -> None:
    la = LocalAgreement()
    la.update(hyp("a quick brown"))
    assert la.update(hyp("the quick brown")) == []
    assert texts(la.unstable) == ["the", "quick", "brown"]


def test_punctuation_and_case_differences_still_agree() -> None:
    la = LocalAgreement()
    la.update(hyp("Hello, world this"))
    new = la.update(hyp("hello World. This is"))
    assert [norm(w.text) for w in new] == ["hello", "world", "this"]
    assert texts(la.unstable) == ["is"]


def test_norm_keeps_accents_and_drops_punctuation() -> None:
    assert norm("Émile,") == "émile"
    assert norm("ÉMILE") == norm("émile")
    assert norm("emile") != norm("émile")
    assert norm("...") == ""


def test_punctuation_only_words_compare_by_text() -> None:
    assert common_prefix([HypWord("-", 0, 1)], [HypWord("-", 0, 1)]) == 1
    assert common_prefix([HypWord("-", 0, 1)], [HypWord("...", 0, 1)]) == 0


def test_committed_words_never_change_when_a_later_hypothesis_disagrees() -> None:
    la = LocalAgreement()
    la.update(hyp("hello world is"))
    la.update(hyp("hello world is good"))
    before = list(la.committed)
    assert texts(before) == ["hello", "world", "is"]
    # The decoder now hears "yellow" instead of "hello": committed text stays, only later words are considered.
    la.update(hyp("yellow world is good news"))
    la.update(hyp("yellow word is good news today"))
    assert la.committed[:3] == before
    assert texts(la.committed) == ["hello", "world", "is", "good", "news"]


def test_after_committed_reanchors_when_the_decoder_drops_a_committed_word() -> None:
    la = LocalAgreement()
    la.update(hyp("so the quick brown"))
    la.update(hyp("so the quick brown fox"))
    assert texts(la.committed) == ["so", "the", "quick", "brown"]
    # "so" vanished; the last three committed words are found again (their end time matches) and what follows is new.
    rewritten = [HypWord("the", 0.3, 0.6), HypWord("quick", 0.6, 0.9), HypWord("brown", 0.9, 1.2),
                 HypWord("fox", 1.2, 1.5), HypWord("jumps", 1.5, 1.8)]
    assert texts(la.after_committed(rewritten)) == ["fox", "jumps"]


def test_after_committed_reanchors_when_the_decoder_inserts_a_word() -> None:
    la = LocalAgreement()
    la.update(hyp("so the quick brown"))
    la.update(hyp("so the quick brown"))
    inserted = hyp("so uh the quick brown fox", step=0.24)
    assert texts(la.after_committed(inserted)) == ["fox"]


def test_after_committed_ignores_a_far_away_repeat_of_the_anchor() -> None:
    la = LocalAgreement()
    la.update(hyp("the quick brown"))
    la.update(hyp("the quick brown"))
    # The anchor phrase recurs 3 s later; it ends far from the committed end (0.9 s), so it is not the anchor.
    words = hyp("a quick brown fox", step=0.3) + hyp("the quick brown again", start=3.0)
    assert texts(la.after_committed(words)) == ["fox", "the", "quick", "brown", "again"]


def test_after_committed_falls_back_to_time_when_no_anchor_matches() -> None:
    la = LocalAgreement()
    la.update(hyp("so the quick brown"))
    la.update(hyp("so the quick brown"))
    # Committed ends at 1.2 s; only words whose middle lies after that are new.
    assert texts(la.after_committed(hyp("sew a quack brown fox jumps"))) == ["fox", "jumps"]


def test_finish_returns_committed_then_the_tail_of_the_final_hypothesis() -> None:
    la = LocalAgreement()
    la.update(hyp("the quick brown"))
    la.update(hyp("the quick brown fox"))
    final = la.finish(hyp("The quick brown fox jumps."))
    assert texts(final) == ["the", "quick", "brown", "fox", "jumps."]
    # The state is reset for the next utterance.
    assert la.committed == [] and la.unstable == []
    assert la.update(hyp("next one")) == []


def test_finish_without_partials_returns_the_final_hypothesis() -> None:
    assert texts(LocalAgreement().finish(hyp("just this"))) == ["just", "this"]


def test_finish_never_drops_committed_words_even_if_the_final_decode_is_empty() -> None:
    la = LocalAgreement()
    la.update(hyp("the quick"))
    la.update(hyp("the quick"))
    assert texts(la.finish([])) == ["the", "quick"]


def test_cut_takes_committed_words_and_keeps_the_unstable_tail() -> None:
    la = LocalAgreement()
    la.update(hyp("alpha beta gamma"))
    la.update(hyp("alpha beta gamma delta"))
    taken = la.cut()
    assert texts(taken) == ["alpha", "beta", "gamma"]
    assert la.committed == []
    assert texts(la.unstable) == ["delta"]
    # The next hypothesis (of the audio after the cut) agrees with the pending tail at once.
    assert texts(la.update([HypWord("delta", 0.9, 1.2), HypWord("epsilon", 1.2, 1.5)])) == ["delta"]


def test_cut_with_nothing_unstable_needs_two_new_hypotheses() -> None:
    la = LocalAgreement()
    la.update(hyp("alpha beta"))
    la.update(hyp("alpha beta"))
    assert texts(la.cut()) == ["alpha", "beta"]
    assert la.update(hyp("gamma", start=0.6)) == []
    assert texts(la.update(hyp("gamma", start=0.6))) == ["gamma"]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["Hello", ",", "world", "!"], "Hello, world!"),
        (["Hello,", "world."], "Hello, world."),
        (["costs", "5", "%", "more"], "costs 5% more"),
        (["a", "(", "small", ")", "note", ";", "ok"], "a (small) note; ok"),
        (["well-", "known"], "well-known"),
        (["Is", "it", "?"], "Is it?"),
        ([], ""),
    ],
)
def test_join_words_spacing(words: list[str], expected: str) -> None:
    assert join_words([HypWord(w, 0, 0) for w in words]) == expected


def test_join_words_free_standing_dash_is_spaced_on_both_sides() -> None:
    assert join_words([HypWord(w, 0, 0) for w in ["wait", "-", "what"]]) == "wait - what"


def test_words_of_unspaced_scripts_join_without_spaces() -> None:
    def w(text: str) -> HypWord:
        return HypWord(text, 0.0, 0.1)

    assert join_words([w("我们"), w("今天"), w("讨论"), w("。")]) == "我们今天讨论。"
    assert join_words([w("これは"), w("テスト"), w("です")]) == "これはテストです"
    assert join_words([w("안녕하세요"), w("여러분")]) == "안녕하세요 여러분"  # Korean uses spaces
    assert join_words([w("GPU"), w("上"), w("运行")]) == "GPU 上运行"
