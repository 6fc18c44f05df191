"""A session's conversation: system prompt first, history bounded by messages and characters."""

from __future__ import annotations

from server.chat.conversation import Conversation


def contents(conversation: Conversation, message: str) -> list[str]:
    return [m["content"] for m in conversation.request(message)]


def test_a_request_is_the_system_prompt_the_history_and_the_new_message() -> None:
    conversation = Conversation("Be brief.", max_messages=10, max_chars=1000)
    conversation.add_turn("Hi", "Hello!")
    assert conversation.request("How are you?") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
    ]


def test_beyond_the_message_bound_the_oldest_turns_go() -> None:
    conversation = Conversation("S", max_messages=4, max_chars=1000)
    for i in range(5):
        conversation.add_turn(f"q{i}", f"a{i}")
    assert contents(conversation, "next") == ["S", "q3", "a3", "q4", "a4", "next"]


def test_beyond_the_character_budget_the_oldest_messages_go_and_history_starts_with_a_question() -> None:
    conversation = Conversation("S", max_messages=100, max_chars=25)
    conversation.add_turn("q1", "a" * 10)
    conversation.add_turn("q2", "b" * 10)
    # 2 + 10 + 2 + 10 = 24 chars fit; a third turn pushes out the first question, and its
    # answer must go too (a reply without its question would confuse the model).
    conversation.add_turn("q3", "c" * 5)
    history = conversation.history
    assert history[0].role == "user"
    assert [m.content for m in history] == ["q2", "b" * 10, "q3", "c" * 5]
    assert sum(len(m.content) for m in history) <= 25


def test_an_empty_system_prompt_sends_none() -> None:
    assert Conversation("", 4, 100).request("Hi") == [{"role": "user", "content": "Hi"}]
