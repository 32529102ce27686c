"""Chinese (and other scripts written without spaces) for the offline notes: where sentences end, what counts as a
term, and how long a line is.

Before this, a Chinese transcript had no sentence the notes could use (the splitter knew only `.!?` followed by a
space, and a sentence needed five space-separated words) and the word pattern took a whole run of characters for
one "word". Now sentences also end at `。！？；`, a CJK sentence needs `MIN_CHARS` characters and, to become a
bullet, a closing mark (a final that ends mid-sentence leaves a fragment), and a run of CJK characters is cut into
words by jieba, minus function words. jieba won against overlapping character bigrams on
benchmarks/lectures/zh.txt: the same bullets, but 2 of the bigrams' 15 key terms straddled two words ("度下",
"习率") where all of jieba's were words (benchmarks/README.md, "Chinese offline notes").
"""

from __future__ import annotations

import logging
import re
from typing import Any

CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff"  # Han (with extension A and compatibility), kana
RUN = re.compile(f"[{CJK}]+")
SENTENCE_MARKS = "。！？；"
MIN_CHARS = 8  # a CJK sentence shorter than this is a filler ("好，我们开始。")
MAX_CHARS = 120  # a longer CJK sentence is no bullet a student reads at a glance

# Function words and classroom filler: their bigrams say nothing about the lecture's content.
STOP = frozenset("""
我们 你们 他们 她们 它们 这个 那个 这些 那些 这样 那样 这里 那里 这么 那么 就是 一个 一些 一下 一点 什么 怎么
为什么 可以 可能 所以 然后 因为 如果 但是 还是 或者 而且 没有 不是 就会 也是 都是 已经 现在 时候 其实 大家 同学
同学们 今天 上课 下面 接下来 比如 比如说 的话 的时候 我们的 这就是 也就是 也就 就要 就能 知道 觉得 看到 看一下
的是 了一 是一 有一 一种 这种 那种 它的 他的 你的 我的 自己 非常 比较 特别 很多 这节 这节课 来说 来讲 所谓 问题
后面 前面 里面 上面 一样 东西 地方 部分 时间 第一 第二 第三 一次 两个 三个
""".split())
# Particles and pronouns: a bigram holding one is never a term ("体的", "们要"), whatever is beside it.
STOP_CHARS = frozenset("的了吗呢吧啊着么啦嘛呀们这那我你他她它")


def has_cjk(text: str) -> bool:
    return RUN.search(text) is not None


def long_enough(sentence: str, min_words: int) -> bool:
    """A sentence worth a bullet: `min_words` space-separated words, or MIN_CHARS CJK characters."""
    return len(sentence.split()) >= min_words or sum(len(r) for r in RUN.findall(sentence)) >= MIN_CHARS


WORDS_PER_CHAR = 0.6  # speech runs at about 150 English words or 250 Chinese characters a minute


def word_count(text: str) -> float:
    """How much was said, in English words' worth: space-separated words outside CJK runs, and 0.6 per CJK
    character (so the notes' "150 new words" trigger fires as often for a Chinese lecture)."""
    runs = RUN.findall(text)
    words = sum(any(c.isalnum() for c in w) for w in RUN.sub(" ", text).split())  # not "。" left alone
    return words + WORDS_PER_CHAR * sum(len(r) for r in runs)


def bulletable(sentence: str) -> bool:
    """Whether a sentence may stand as a bullet: any without CJK; a CJK one of at most MAX_CHARS characters that
    ends at a sentence or clause mark (not a fragment where a final ended mid-sentence)."""
    if not has_cjk(sentence):
        return True
    return len(sentence) <= MAX_CHARS and sentence.rstrip()[-1:] in SENTENCE_MARKS + ".!?"


def words(run: str) -> list[str]:
    """The terms of a run of CJK characters: jieba's words of two characters or more, minus function words and
    two-character words holding a particle or pronoun."""
    return [w for w in _segment(run) if len(w) >= 2 and w not in STOP and not (len(w) == 2 and STOP_CHARS & set(w))]


def _segment(run: str) -> list[str]:
    global _jieba
    if _jieba is None:
        import jieba  # loaded on first use: English-only servers never pay for its dictionary

        jieba.setLogLevel(logging.WARNING)
        jieba.initialize()  # about a second, once (jieba guards it with its own lock and caches it on disk)
        _jieba = jieba
    return _jieba.lcut(run)


_jieba: Any = None
