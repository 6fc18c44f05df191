"""A streamed reply is cut into sentences as soon as each is complete."""

from __future__ import annotations

from server.chat.sentences import SentenceSplitter, split_sentences


def test_sentences_end_at_terminal_punctuation_followed_by_space() -> None:
    assert split_sentences("Hello there! How are you? I am fine. Good") == [
        "Hello there!", "How are you?", "I am fine.", "Good",
    ]


def test_a_sentence_comes_out_once_the_space_after_its_full_stop_arrives() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Hello wor") == []
    assert splitter.feed("ld.") == []  # "world.5" could still follow
    assert splitter.feed(" How") == ["Hello world."]
    assert splitter.feed(" are you?") == []
    assert splitter.flush() == ["How are you?"]
    assert splitter.flush() == []


def test_word_by_word_gives_the_same_sentences_as_all_at_once() -> None:
    text = 'She said "Stop!" Then left. It cost 3.50 dollars… Really?! Yes.'
    splitter = SentenceSplitter()
    pieces = []
    for word in text.split(" "):
        pieces += splitter.feed(word + " ")
    assert pieces + splitter.flush() == split_sentences(text)
    assert split_sentences(text) == [
        'She said "Stop!"', "Then left.", "It cost 3.50 dollars…", "Really?!", "Yes.",
    ]


def test_abbreviations_initials_and_decimals_end_no_sentence() -> None:
    assert split_sentences("Dr. Smith met J. Doe at 3.5 km, e.g. near St. Paul. Fine.") == [
        "Dr. Smith met J. Doe at 3.5 km, e.g. near St. Paul.", "Fine.",
    ]


def test_a_line_break_ends_a_sentence() -> None:
    assert split_sentences("First line\nSecond line\n\nThird") == ["First line", "Second line", "Third"]


def test_a_run_on_sentence_is_cut_at_a_comma_or_space_before_the_bound() -> None:
    text = "one, two three four five six seven eight nine ten eleven twelve"
    pieces = split_sentences(text, max_chars=20)
    assert all(len(p) <= 20 for p in pieces)
    assert " ".join(pieces).split() == text.split()
    assert pieces[0] == "one, two three four"
