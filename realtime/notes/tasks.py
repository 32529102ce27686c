"""Assignments, readings, exams and deadlines the lecturer says out loud, found offline in English and Chinese
(sans-I/O).

A sentence is a task when it asks the students to do something: an imperative at its start ("Read chapter four
before Thursday", "For Thursday, solve problems three to seven"), an obligation addressed to them ("you need to
submit ..."; "请大家 ...", "同学们要 ..."), or a task noun with a due date ("The homework is due Friday", "作业下周一
交"), or an exam announced ("The midterm covers chapters one to five", "期中考试在第八周"). A story is not a task:
"I read a book on Thursday" has no imperative, no obligation on the students and no task noun; a sentence that
opens with I / we / he / she / they and a past-tense verb (or, in Chinese, 我/我们 ... 了) is never one. Each task
keeps the date phrase as it was said ("before Thursday", "下周一") for its `due`.
"""

from __future__ import annotations

import re

from realtime.core.protocol import Final
from realtime.notes import cjk
from realtime.notes.extractive import sentences

TASK_CHARS = 200
_EN_VERBS = (r"read|re-read|reread|review|revise|finish|complete|submit|hand in|turn in|prepare|solve|do|write|watch|"
             r"bring|study|work through|look at|go through|practise|practice|try|attempt|memori[sz]e|upload|email|send")
_LEAD = r"^(?:(?:please|so|now|and|also|okay|ok|alright|then|first|next|finally)\b,?\s+)*"
_FOR_DATE = r"(?:(?:for|by|before|until|over)\s+[^,]{2,40},\s*)?"
_EN_IMPERATIVE = re.compile(rf"{_LEAD}{_FOR_DATE}(?:please\s+)?(?:{_EN_VERBS})\b", re.IGNORECASE)
_EN_OBLIGATION = re.compile(
    rf"\b(?:you(?:'ll| will)?\s+(?:all\s+)?(?:should|must|need to|have to|are (?:expected|supposed|required|asked) to|"
    rf"will need to|will have to)|make sure (?:you|to)|don't forget to|do not forget to|remember to|your task is to|"
    rf"i want you to|i'd like you to|i would like you to)\s+(?:\w+\s+){{0,2}}?(?:{_EN_VERBS})\b", re.IGNORECASE)
_EN_TASK_NOUN = re.compile(r"\b(?:homework|assignment|problem set|exercise sheet|exercises|essay|lab report|report|"
                           r"project|worksheet|reading|coursework|paper)s?\b", re.IGNORECASE)
_EN_DUE = re.compile(r"\b(?:due|deadline|submit(?:ted)?|hand(?:ed)? in|turn(?:ed)? in)\b", re.IGNORECASE)
_EN_EXAM = re.compile(r"\b(?:exam|midterm|mid-term|final exam|quiz|test)s?\b", re.IGNORECASE)
_EN_EXAM_INFO = re.compile(r"\b(?:covers?|will (?:be|cover|include|take)|is (?:on|next|in)|takes place|counts?|"
                           r"worth|open[- ]book|closed[- ]book)\b", re.IGNORECASE)
_EN_OBJECT = re.compile(r"\b(?:chapters?|sections?|pages?|problems?|exercises?|questions?|homework|assignments?|"
                        r"essays?|reports?|papers?|articles?|slides|video|lab|project|textbook|book|worksheet|proofs?)\b",
                        re.IGNORECASE)
_EN_STORY = re.compile(r"^(?:\w+,?\s+){0,2}?(?:i|we|he|she|they|my \w+)\s+(?:\w+ly\s+)?(?:read|did|wrote|went|had|took|"
                       r"watched|saw|was|were|used to|talked|discussed|showed|found|learned|learnt|derived|"
                       r"looked|tried|finished|spent|got|made|said|told|gave|met|thought|bought|started|studied|solved)\b",
                       re.IGNORECASE)
_WEEKDAY = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_ORDINAL = (r"(?:(?:twenty|thirty)-)?(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|"
            r"twelfth|\w+teenth|twentieth|thirtieth)")
_MONTH = r"(?:january|february|march|april|may|june|july|august|september|october|november|december)"
_EN_DATE = re.compile(
    rf"\b(?:on|by|before|until|due)\s+the\s+{_ORDINAL}\b|"
    rf"\b(?:(?:by|before|until|for|on|due|after)\s+)?(?:(?:next|this|coming)\s+)?(?:the\s+)?(?:"
    rf"{_WEEKDAY}(?:\s+next week)?|tomorrow|tonight|next (?:week|lecture|class|time|session|month|term)|"
    rf"(?:the\s+)?end of (?:the\s+)?(?:week|month|term|semester|day)|"
    rf"in (?:a|one|two|three|four|five|six|\d+)(?: and a half)? (?:days?|weeks?)|"
    rf"{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}|week \d+|"
    rf"the \d{{1,2}}(?:st|nd|rd|th))\b", re.IGNORECASE)

_ZH_DIRECTIVE = re.compile(r"(?:请(?:大家|同学们|你们)?|大家(?:要|需要|必须|记得|回去)|同学们(?:要|需要|必须|记得)|"
                           r"你们(?:要|需要|必须|记得)|记得|别忘了|不要忘记|务必|课后|回去)")
_ZH_TASK_NOUN = re.compile(r"(?:作业|习题|练习题|练习|报告|论文|实验报告|项目|第[一二三四五六七八九十百\d]+[章节]|"
                           r"教材|课本)")
_ZH_DUE = re.compile(r"(?:截止|之前|以前|前交|前提交|交上来|提交)")
_ZH_EXAM = re.compile(r"(?:考试|期中|期末|测验|小测|考)")
_ZH_EXAM_INFO = re.compile(r"(?:范围|包括|考到|在第|安排在|闭卷|开卷|占|时间是)")
_ZH_STORY = re.compile(r"^(?:我|我们|他|她|他们)[^，。！？；]{0,12}了")
_ZH_NUM = "[一二三四五六七八九十两\\d]"
_ZH_DATE = re.compile(
    rf"(?:(?:下|这|本|上)?(?:周|星期|礼拜)[一二三四五六日天末]|下周|下星期|明天|后天|今晚|下次课|下节课|下次|"
    rf"{_ZH_NUM}+月{_ZH_NUM}+[日号]|{_ZH_NUM}+[日号]|第{_ZH_NUM}+周|月底|周末|{_ZH_NUM}+(?:天|周)(?:内|后|之内))"
    rf"(?:之前|以前|前)?")


def kind_of(text: str) -> str:
    lower = text.lower()
    if _EN_EXAM.search(lower) and _EN_EXAM_INFO.search(lower) or _ZH_EXAM.search(text) and (
            _ZH_EXAM_INFO.search(text) or _ZH_DATE.search(text)):
        return "exam"
    if re.search(r"\b(?:read|reread|re-read|reading|chapter|pages?|paper|article|textbook)\b", lower) or \
            re.search(r"(?:阅读|读|第.+章|教材|课本|论文)", text):
        return "reading"
    if _EN_DUE.search(lower) or _ZH_DUE.search(text):
        return "deadline"
    return "assignment"


def is_task(text: str) -> bool:
    """Whether a sentence asks the students to do something (see the module docstring). An imperative or an
    obligation counts only with something to do or a date ("Look at this graph" is no assignment)."""
    if cjk.has_cjk(text):
        if _ZH_STORY.search(text):
            return False
        noun, date = _ZH_TASK_NOUN.search(text), _ZH_DATE.search(text)
        if noun and (_ZH_DIRECTIVE.search(text) or date or _ZH_DUE.search(text)):
            return True
        return bool(_ZH_EXAM.search(text) and (_ZH_EXAM_INFO.search(text) or date))
    if _EN_STORY.search(text):
        return False
    goal = _EN_OBJECT.search(text) or _EN_DATE.search(text)
    if goal and (_EN_IMPERATIVE.search(text) or _EN_OBLIGATION.search(text)):
        return True
    if _EN_TASK_NOUN.search(text) and (_EN_DUE.search(text) or _EN_DATE.search(text)):
        return True
    return bool(_EN_EXAM_INFO.search(text) and
                re.search(r"\b(?:the|your|our|next|this|a)\s+(?:\w+\s+)?(?:exam|midterm|mid-term|quiz|test)s?\b",
                          text, re.IGNORECASE))


def due_phrase(text: str) -> str:
    """The date phrase as said ("before Thursday", "下周一之前"), or ""."""
    m = _EN_DATE.search(text) or _ZH_DATE.search(text)
    return m.group(0).strip() if m else ""


def offline_tasks(finals: list[Final]) -> list[dict]:
    """The tasks said so far (panel `tasks`), in lecture order; one per sentence that is one."""
    start = {f.id: f.start for f in finals}
    out = []
    for s in sentences([(f.id, f.text) for f in finals], min_words=3):
        if not is_task(s.text):
            continue
        text = s.text if len(s.text) <= TASK_CHARS else s.text[:TASK_CHARS - 1].rstrip() + "…"
        out.append({"id": f"a{s.segment}.{s.index}", "text": text, "kind": kind_of(s.text),
                    "due": due_phrase(s.text), "refs": [s.segment], "start": start[s.segment]})
    return out[-40:]
