"""search_conversations through the SDK against the real stack: ranking, query syntax, stemming,
paging, and who finds what (a user's token, another user's token, anon).

Every test creates its own users (fresh shops), so a search sees only the conversations the test
inserted; nothing depends on another test's rows.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from supabase_identity import (
    AsyncIdentityClient,
    IdentityClient,
    PermissionDeniedError,
    SearchPage,
    ValidationError,
)

from .conftest import SdkEnv, sdk_shop

pytestmark = pytest.mark.integration

FILLER = "The merchant asked a question and the assistant answered it politely."


def insert(
    client: IdentityClient, user_id: str, *conversations: list[str], workflow: str = "support"
) -> list[uuid.UUID]:
    """One conversation per list of message contents (1 min apart, the first oldest); the
    database computes each one's search vector as it stores the row."""
    base = datetime.now(UTC) - timedelta(days=1)
    ids = [uuid.uuid4() for _ in conversations]
    rows = [
        {
            "id": str(conv_id),
            "user_id": user_id,
            "merchant_id": "m-search",
            "workflow_name": workflow,
            "started_at": (base + timedelta(minutes=i)).isoformat(),
            "messages": [
                {"sender": "user" if j % 2 == 0 else "assistant", "content": text}
                for j, text in enumerate(contents)
            ],
        }
        for i, (conv_id, contents) in enumerate(zip(ids, conversations, strict=True))
    ]
    client.supabase.postgrest.from_("conversations").insert(rows).execute()
    return ids


def ids(page: SearchPage) -> list[uuid.UUID]:
    return [hit.id for hit in page.items]


def test_ranking_puts_the_most_relevant_first(sdk_service: IdentityClient) -> None:
    user_id, _ = sdk_service.get_or_create_user(sdk_shop("search"))
    once, never, thrice = insert(
        sdk_service,
        user_id,
        [FILLER, "Where is my refund?", FILLER],
        [FILLER, FILLER, FILLER],
        ["I want a refund.", "The refund was issued.", "Refund received, thanks."],
    )

    page = sdk_service.search_conversations(user_id, "refund")

    assert ids(page) == [thrice, once]
    assert page.total == 2 and not page.has_more
    assert page.items[0].rank > page.items[1].rank > 0
    assert never not in ids(page)
    hit = page.items[1]
    assert hit.snippet == "Where is my <mark>refund</mark>?"
    assert (hit.user_id, hit.workflow_name, hit.message_count) == (user_id, "support", 3)


def test_contents_outrank_the_workflow_name(sdk_service: IdentityClient) -> None:
    user_id, _ = sdk_service.get_or_create_user(sdk_shop("search"))
    (in_contents,) = insert(sdk_service, user_id, ["Please check the onboarding steps."])
    (in_workflow,) = insert(sdk_service, user_id, [FILLER], workflow="onboarding")

    page = sdk_service.search_conversations(user_id, "onboarding")

    assert ids(page) == [in_contents, in_workflow]
    # Nothing in the messages to mark: the snippet is the first message's opening words.
    assert page.items[1].snippet == FILLER


def test_phrase_exclusion_or_and_stemming(sdk_service: IdentityClient) -> None:
    user_id, _ = sdk_service.get_or_create_user(sdk_shop("search"))
    label, reverse, shipping, invoice = insert(
        sdk_service,
        user_id,
        ["I need a return label for my refund."],
        ["The label is printed; the refund comes later."],
        ["The shipping of my refund is late."],
        ["Send me the invoice please."],
    )

    assert ids(sdk_service.search_conversations(user_id, '"return label"')) == [label]
    assert set(ids(sdk_service.search_conversations(user_id, "label refund"))) == {
        label,
        reverse,
    }
    assert set(ids(sdk_service.search_conversations(user_id, "refund -label"))) == {shipping}
    assert set(ids(sdk_service.search_conversations(user_id, "invoice or shipping"))) == {
        shipping,
        invoice,
    }
    stemmed = sdk_service.search_conversations(user_id, "shipped")
    assert ids(stemmed) == [shipping]
    assert stemmed.items[0].snippet is not None
    assert "<mark>shipping</mark>" in stemmed.items[0].snippet


def test_paging_and_stop_words(sdk_service: IdentityClient) -> None:
    user_id, _ = sdk_service.get_or_create_user(sdk_shop("search"))
    convs = insert(sdk_service, user_id, *[[f"parcel number {i}"] for i in range(5)])

    first = sdk_service.search_conversations(user_id, "parcel", limit=2)
    second = sdk_service.search_conversations(user_id, "parcel", limit=2, offset=2)
    last = sdk_service.search_conversations(user_id, "parcel", limit=2, offset=4)

    assert (first.total, second.total, last.total) == (5, 5, 5)
    assert first.has_more and second.has_more and not last.has_more
    seen = ids(first) + ids(second) + ids(last)
    assert sorted(seen) == sorted(convs)  # every hit once, none twice
    # Equal ranks: newest first.
    assert seen == list(reversed(convs))

    stop = sdk_service.search_conversations(user_id, "the and of")
    assert (stop.items, stop.total) == ([], 0)
    with pytest.raises(ValidationError) as caught:
        sdk_service.search_conversations(user_id, "x" * 1001)
    assert (caught.value.field, caught.value.rule) == ("query", "max_length")


def test_a_user_finds_only_their_own_and_anon_nothing(
    sdk_env: SdkEnv, sdk_service: IdentityClient
) -> None:
    owner, _ = sdk_service.get_or_create_user(sdk_shop("owner"))
    other, _ = sdk_service.get_or_create_user(sdk_shop("other"))
    (mine,) = insert(sdk_service, owner, ["My chargeback dispute is open."])
    insert(sdk_service, other, ["Another chargeback dispute."])

    assert ids(sdk_service.for_user(owner).search_conversations(owner, "chargeback")) == [mine]
    # Another user's token asking for the owner's conversations finds nothing.
    theirs = sdk_service.for_user(other).search_conversations(owner, "chargeback")
    assert (theirs.items, theirs.total) == ([], 0)
    # anon may not search at all.
    anon = IdentityClient(key=sdk_env.gw.anon_key, redis_url=None)
    with anon, pytest.raises(PermissionDeniedError):
        anon.search_conversations(owner, "chargeback")
    # The service key searches any user.
    assert sdk_service.search_conversations(other, "chargeback").total == 1


async def test_async_client_finds_the_same(
    sdk_service: IdentityClient, sdk_aservice: AsyncIdentityClient
) -> None:
    user_id, _ = sdk_service.get_or_create_user(sdk_shop("search"))
    (conv,) = insert(sdk_service, user_id, ["The warranty claim was approved."])

    page = await sdk_aservice.for_user(user_id).search_conversations(user_id, "warranties")

    assert ids(page) == [conv] and page.total == 1
    assert page.items[0].snippet == "The <mark>warranty</mark> claim was approved."
