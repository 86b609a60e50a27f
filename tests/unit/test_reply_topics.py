"""Which topics a price request may ask its reply on (scorer.reply_topics), with a
stand-in for the broker's topic listing and a clock the test moves."""

import asyncio

import pytest

from scorer import reply_topics
from scorer.reply_topics import ReplyTopics


class Listed(ReplyTopics):
    def __init__(self, topics: set[str]) -> None:
        super().__init__("unused:9092")
        self.topics, self.listings = topics, 0

    async def _list_topics(self) -> set[str]:
        self.listings += 1
        return set(self.topics)


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(reply_topics.time, "monotonic", lambda: now[0])
    return now


def test_price_replies_and_a_clients_own_existing_topic_but_no_other_catalogue_topic(clock):
    topics = Listed({"price-replies", "prices", "rentals", "dead-letters", "shop-replies"})
    wanted = {"price-replies", "prices", "rentals", "dead-letters", "shop-replies", "missing"}
    assert asyncio.run(topics.allowed(wanted)) == {"price-replies", "shop-replies"}


def test_an_unknown_topic_lists_the_broker_again_at_most_once_a_second(clock):
    topics = Listed({"price-replies"})
    assert asyncio.run(topics.allowed({"price-replies"})) == {"price-replies"}
    assert topics.listings == 1
    assert asyncio.run(topics.allowed({"price-replies"})) == {"price-replies"}
    assert topics.listings == 1  # all known: no listing
    topics.topics.add("new-replies")  # a client creates its topic
    clock[0] += 0.5
    assert asyncio.run(topics.allowed({"new-replies"})) == set()  # listed half a second ago: not again yet
    assert topics.listings == 1
    clock[0] += 0.5
    assert asyncio.run(topics.allowed({"new-replies"})) == {"new-replies"}
    assert topics.listings == 2
