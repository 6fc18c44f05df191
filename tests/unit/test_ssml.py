"""Markup is removed from text to speak, never spoken; plain text is left as it is."""

from __future__ import annotations

import pytest

from server.tts.ssml import has_markup, speakable_text


def test_speak_and_break_tags_are_not_in_the_text_a_backend_gets() -> None:
    text = speakable_text('<speak>Hello <break time="1s"/> world</speak>')
    assert text == "Hello, world"
    assert "speak" not in text and "break" not in text


@pytest.mark.parametrize(
    ("ssml", "spoken"),
    [
        ('<?xml version="1.0"?><speak version="1.1"><p>One.</p><p>Two</p></speak>', "One. Two."),
        ('<speak>The <sub alias="World Wide Web">WWW</sub> &amp; more</speak>', "The World Wide Web & more"),
        ('<speak><prosody rate="slow">Slowly</prosody> <emphasis>now</emphasis></speak>', "Slowly now"),
        ("<speak><s>Hi</s><s>there</s></speak>", "Hi. there."),
        ("Hi <!-- not this --> there", "Hi there"),
        ('<speak><say-as interpret-as="characters">abc</say-as></speak>', "abc"),
    ],
)
def test_elements_keep_their_text_and_lose_their_tags(ssml: str, spoken: str) -> None:
    assert speakable_text(ssml) == spoken


@pytest.mark.parametrize("plain", ["3 < 5 and 6 > 2", "Tom & Jerry", "I <3 you", "a <- b"])
def test_plain_text_with_angle_brackets_is_left_alone(plain: str) -> None:
    assert not has_markup(plain)
    assert speakable_text(plain) == plain


def test_whitespace_is_collapsed() -> None:
    assert speakable_text("  Hello \n\n  world \t") == "Hello world"


def test_markup_alone_says_nothing() -> None:
    assert speakable_text("<speak> <break/> </speak>") == ""
