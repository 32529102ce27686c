"""Offline notes for Chinese: sentences end at 。！？；, terms are words (jieba), bullets are whole sentences of a
readable length, and English is cut as before."""

from __future__ import annotations

from realtime.notes import cjk
from realtime.notes.extractive import content_words, emphasise, extract, sentences, top_terms

LECTURE = [
    (1, "好，我们开始上课。今天我们讲梯度下降和学习率。"),
    (2, "梯度下降的更新规则是：新的参数等于旧的参数减去学习率乘以梯度。"),
    (3, "学习率太大，梯度下降会发散；学习率太小，训练会非常慢。"),
    (4, "为了防止过拟合，可以增加数据、降低模型复杂度，或者用正则化，"),  # a final that ends mid-sentence
    (5, "L2正则化也叫岭回归。下周四之前请完成作业一。"),
    (6, "验证集用来选择学习率和正则化系数，测试集只能用一次。"),
]


def test_sentences_end_at_chinese_marks_and_fillers_are_dropped() -> None:
    texts = [s.text for s in sentences(LECTURE)]
    assert "好，我们开始上课。" not in texts  # under MIN_CHARS: classroom filler
    assert "梯度下降的更新规则是：新的参数等于旧的参数减去学习率乘以梯度。" in texts
    assert "学习率太大，梯度下降会发散；" in texts and "学习率太小，训练会非常慢。" in texts
    assert [s.text for s in sentences([(1, "It works. Really well, it does, yes.")])] == [
        "Really well, it does, yes."]  # English: five words, as before


def test_terms_are_words_not_runs_and_not_function_words() -> None:
    words = content_words("今天我们讲梯度下降和学习率。The gradient descent works.")
    assert {"梯度", "下降", "学习", "gradient", "descent"} <= set(words)
    assert not {"我们", "今天", "今天我们讲梯度下降和学习率"} & set(words)
    docs = [content_words(s.text) for s in sentences(LECTURE)]
    assert set(top_terms(docs, 3)) == {"梯度", "学习", "下降"}
    assert emphasise("梯度下降的关键是学习率", ["学习"]) == "梯度下降的关键是**学习**率"


def test_bullets_are_whole_readable_sentences() -> None:
    bullets = extract(LECTURE, max_bullets=6)
    assert bullets
    for b in bullets:
        text = b.text.replace("**", "")
        assert text[-1] in "。！？；" and len(text) <= cjk.MAX_CHARS, b
    assert not any("复杂度，或者用正则化，" in b.text.replace("**", "") for b in bullets)  # the fragment
    assert not cjk.bulletable("很" * 121 + "。") and cjk.bulletable("A sentence without a mark")


def test_a_chinese_lecture_triggers_updates_by_what_was_said() -> None:
    from realtime.notes.scheduler import NotesScheduler

    assert cjk.word_count("梯度下降的关键是学习率。") == 0.6 * 11
    assert cjk.word_count("The gradient 下降 works.") == 3 + 1.2
    schedule = NotesScheduler(interval_s=1e9, first_after_words=25)
    schedule.add_final("今天我们讲梯度下降和学习率，还有过拟合和正则化。", 0.0)  # 22 characters: 13.2 words
    assert not schedule.due(1.0)
    schedule.add_final("梯度下降的更新规则是新的参数等于旧的参数减去学习率。", 2.0)
    assert schedule.due(3.0)
