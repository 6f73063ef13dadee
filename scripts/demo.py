"""The seed's end-to-end flows (Phase 4.5.6) on the local stack, for real, in a few lines.

1. A new shop completes Shopify OAuth: user created, `oauth_complete` logged with first_time.
2. The agents side writes conversations to Redis under that user (ConversationStore).
3. The archiver archives them into Supabase (through PostgREST).
4. Profile and history, read through a user-scoped client (RLS enforces the same rules).
5. The same shop returns: same usr_ id, is_new false, previous conversations visible.

Each run uses a new shop, so it can run any number of times; it uses its own Redis database.
"""

from __future__ import annotations

import os
import sys
import uuid
from datetime import UTC, datetime, timedelta

import redis

from supabase_identity import (
    ArchiverConfig,
    ConversationArchiver,
    ConversationStore,
    IdentityClient,
    complete_oauth,
)

DEMO_REDIS_DB = 2
SCRIPT = [
    ("shopify_onboarding", ["Hi, I just installed the app", "Welcome! Let's connect your store."]),
    ("ad_hoc_support", ["Why did my sales drop yesterday?", "Two products went out of stock."]),
    ("weekly_review", ["Show me last week", "Revenue is up 12% week over week."]),
]


def step(text: str) -> None:
    print(f"\n> {text}")


def main() -> int:
    redis_url = os.environ["REDIS_URL"].rsplit("/", 1)[0] + f"/{DEMO_REDIS_DB}"
    r = redis.Redis.from_url(redis_url)
    shop = f"demo-{uuid.uuid4().hex[:6]}.myshopify.com"
    with IdentityClient(redis_url=redis_url) as identity:
        step(f"{shop} completes Shopify OAuth")
        login = complete_oauth(shop, redis_client=r, client=identity, email="owner@example.com")
        print(f"  user {login.user_id}  is_new={login.is_new}  merchant {login.merchant_id}")
        event = [e for e in identity.iter_user_events(login.user_id)][-1]
        print(f"  event {event['event_type']} {event['event_data']}")

        step("the agents service writes 3 conversations to Redis")
        store = ConversationStore(r)
        started = datetime.now(UTC) - timedelta(hours=3)
        for n, (workflow, lines) in enumerate(SCRIPT):
            conversation_id = str(uuid.uuid4())
            store.create_session(
                conversation_id,
                user_id=login.user_id,
                merchant_id=login.merchant_id,
                workflow_name=workflow,
                started_at=started + timedelta(hours=n),
            )
            for i, line in enumerate(lines):
                store.append_message(
                    conversation_id,
                    sender="merchant" if i % 2 == 0 else "cj",
                    content=line,
                    timestamp=started + timedelta(hours=n, minutes=i),
                )
            store.end_conversation(conversation_id)
            print(f"  {conversation_id}  {workflow}  {len(lines)} messages")

        step("the archiver runs one pass")
        report = ConversationArchiver(identity, r, config=ArchiverConfig()).run_once()
        print(f"  found {report.found}, archived {report.archived}, failed {len(report.failed)}")

        step("profile and history, read as the user (RLS)")
        as_user = identity.for_user(login.user_id)
        profile = as_user.get_user_profile(login.user_id)
        stats = profile.stats
        print(
            f"  {profile.user_id} {profile.shop_domain} {profile.email}: "
            f"{stats.total_conversations} conversations, {stats.total_messages} messages, "
            f"{stats.total_events} events"
        )
        for item in as_user.get_user_conversations(login.user_id, limit=10).items:
            print(
                f"  {item.started_at:%H:%M}  {item.workflow_name:<20} {item.message_count} messages"
            )

        step(f"{shop} logs in again")
        back = complete_oauth(shop, redis_client=r, client=identity)
        page = identity.for_user(back.user_id).get_user_conversations(back.user_id)
        same = back.user_id == login.user_id
        print(f"  user {back.user_id}  is_new={back.is_new}  same id: {same}")
        print(f"  previous conversations visible: {page.total}")

    ok = (
        login.is_new
        and not back.is_new
        and same
        and report.archived == len(SCRIPT)
        and page.total == len(SCRIPT)
    )
    print("\ndemo: OK" if ok else "\ndemo: FAILED")
    r.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
