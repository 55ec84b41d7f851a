"""Through the local Functions host: a work item that always fails is poisoned after
maxDequeueCount, and the operator's requeue-poison command gets it billed after the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from devstack.commerce_emulator import CommerceEmulator
from devstack.host import LocalFunctionsHost, strip_line_comments
from ops.__main__ import main as ops_main
from shared.billing.ledger import Ledger, LedgerState
from shared.core.hours import last_closed_hour, utc_now
from shared.storage.account import StorageAccount
from shared.storage.queues import POISON_SUFFIX, queue_client
from tests.app_settings import LOCAL_VALUES
from tests.integration.test_report_support import TOKEN, collect
from tests.loopback import wait_for
from tests.scripted_source import TENANT_A, WINDOWS_VM_HOURS, ScriptedSource, vm_record

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def app_root(tmp_path: Path) -> tuple[Path, int]:
    """The real function folder and shared/ with the repo's host.json, except that failed
    messages reappear at once (visibilityTimeout 0) so the test does not wait 5 x 5 min."""
    for name in ("report_to_azure", "shared"):
        (tmp_path / name).symlink_to(REPO / name)
    document = json.loads(strip_line_comments((REPO / "host.json").read_text()))
    queues = document["extensions"]["queues"]
    queues["visibilityTimeout"] = "00:00:00"
    queues["maxPollingInterval"] = "00:00:00.200"
    (tmp_path / "host.json").write_text(json.dumps(document))
    return tmp_path, int(queues["maxDequeueCount"])


def test_poisoned_item_is_billed_after_requeue(make_settings, tmp_path: Path) -> None:
    """A refused token fails every delivery: after maxDequeueCount the item is in the poison
    queue, unbilled; with the token fixed, ``ops requeue-poison`` gets it billed once."""
    settings = make_settings()
    hour = last_closed_hour(utc_now())
    source = ScriptedSource(by_hour={hour: [vm_record(TENANT_A, hour)]})
    collect(settings, source, [hour])
    root, max_dequeue = app_root(tmp_path)
    poison = queue_client(settings, settings.usage_queue_name + POISON_SUFFIX)
    with CommerceEmulator(token="rotated-elsewhere") as emulator:
        values = {
            **LOCAL_VALUES,
            "AzureWebJobsStorage": settings.storage_connection_string.get_secret_value(),
            "USAGE_TABLE_PREFIX": settings.table_prefix,
            "USAGE_QUEUE_NAME": settings.usage_queue_name,
            "COMMERCE_BASE_URL": emulator.base_url,
        }
        with LocalFunctionsHost(root, values, run_timers_at_start=False):

            def poisoned() -> bool:
                try:
                    return bool(poison.peek_messages(max_messages=1))
                except Exception:  # the host creates the poison queue on demand
                    return False

            wait_for(poisoned, "the item in the poison queue")
            # Each delivery: one 403, one fresh token, one more 403.
            assert emulator.calls == {"batchUsageEvent": 2 * max_dequeue}
            assert not emulator.accepted_events()

            emulator.token = TOKEN  # the operator fixes the credential
            assert ops_main(["requeue-poison"]) == 0
            wait_for(emulator.accepted_events, "the requeued item to be billed")
            assert not poison.peek_messages(max_messages=1)
    (event,) = emulator.accepted_events()
    dimension = event["dimension"]
    assert dimension.endswith(WINDOWS_VM_HOURS.lower())
    entry = Ledger(StorageAccount(settings), settings.billing_default_resource_id).get(
        hour, dimension
    )
    assert entry is not None
    assert entry.state is LedgerState.ACCEPTED
    assert entry.usage_event_id == event["usageEventId"]
