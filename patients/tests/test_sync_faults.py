"""The Cliniko sync under drawn fault schedules, and a worker SIGKILLed mid-page (routiq/testing/sync_faults.py).

Every example: a stand-in Cliniko with three pages of live patients (a fifth of them sharing one updated_at
second, as a bulk edit leaves them), some archived; a schedule of faults on its requests; maybe a patient
that changes, is archived or is deleted while the run pages past it; maybe a poison record. The patients sync
is run, and run again after each failure as RQ would, until a run succeeds. Then the database must equal the
stand-in's data: every patient once, with its names, email and archived state; deleted ones soft-deleted or
never stored; the poison record absent and counted as skipped; every run in sync_logs. A patient that changed
during the runs may lag until the next run (the sync reads each list once a run); the next run, with no
faults, must leave everything exact. The appointments sync gets the same treatment (an appointment edited,
cancelled or deleted mid-run), and must also link every appointment to its patient's contact.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.conf import settings as django_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from patients.clients.cliniko import ClinikoClient
from patients.models import Contact
from patients.tests.cliniko_helpers import assert_appointments_equal_server, assert_database_equals_server, run
from patients.tests.conftest import API_KEY
from routiq.testing.cliniko_stub import ClinikoStub
from routiq.testing.sync_faults import (
    CLIENT_OPTIONS,
    FAULT_SETTINGS,
    arm,
    assert_every_attempt_logged,
    kill_mid_page,
    log_ids,
    rolled_back,
    run_until_success,
    schedules,
)
from tenants.credentials import credential_set
from tenants.models import SyncLog, SyncStatus
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db
PATHS = ("", "/v1/patients", "/v1/patients/archived", "/v1/patients/deleted")
PATIENTS = 230  # three pages of 100 on the live list


@dataclass(frozen=True)
class Change:
    kind: str  # a key of MAKE_CHANGE
    patient: int  # index in the live list's order (patients or appointments): the first page, already passed
    after_page: int  # lands after this many written pages, counted over every attempt


CHANGES = st.none() | st.builds(Change, kind=st.sampled_from(("move", "archive", "delete")),
                                patient=st.integers(0, 99), after_page=st.integers(1, 4))
POISONS = st.none() | st.sampled_from(({"created_at": "last Tuesday"}, {"last_name": {"family": "Type"}}))


def client_for(stub: ClinikoStub, **options) -> ClinikoClient:
    return ClinikoClient(API_KEY, contact_email=django_settings.CLINIKO_CONTACT_EMAIL, base_url=stub.base_url,
                         sleep=lambda seconds: None, **{**CLIENT_OPTIONS, **options})


def live_in_list_order(stub: ClinikoStub) -> list[dict]:
    return sorted((p for p in stub.all_patients() if not p["archived_at"]), key=lambda p: (p["updated_at"],
                                                                                              int(p["id"])))


# What a change does at Cliniko, by kind: an edit moves the record's updated_at to now; the others also move it
# from one list to another.
MAKE_CHANGE = {
    "move": lambda stub, record_id: stub.update_patient(record_id, last_name="Moved-While-Paging"),
    "archive": lambda stub, record_id: stub.archive_patient(record_id),
    "delete": lambda stub, record_id: stub.delete_patient(record_id),
    "edit_appointment": lambda stub, record_id: stub.update_appointment(record_id, notes="Moved while paging"),
    "cancel_appointment": lambda stub, record_id: stub.cancel_appointment(record_id),
    "delete_appointment": lambda stub, record_id: stub.delete_appointment(record_id),
}


def apply(change: Change, stub: ClinikoStub, record_id: str) -> None:
    stub.advance(seconds=1)
    MAKE_CHANGE[change.kind](stub, record_id)


@FAULT_SETTINGS
@given(schedule=schedules(PATHS), change=CHANGES, poison=POISONS)
def test_any_fault_schedule_ends_with_the_database_equal_to_cliniko(org_a, schedule, change, poison):
    with ClinikoStub(api_keys=[API_KEY], rate_limit_per_minute=None) as stub, rolled_back():
        stub.seed(patients=PATIENTS, appointments_per_patient=0, seed=21)
        live = live_in_list_order(stub)
        skipped = frozenset()
        if poison is not None:
            stub.serve_raw(live[150]["id"], **poison)  # on the second page
            skipped = frozenset({int(live[150]["id"])})
        changed = live[change.patient]["id"] if change is not None else None
        on_page = arm(stub, schedule, change=(lambda: apply(change, stub, changed)) if change else None,
                      after_page=change.after_page if change else 0)
        before = log_ids(org_a, "cliniko")
        client = client_for(stub)

        attempts = run_until_success(lambda: run(org_a, client, on_page=on_page), attempts=len(schedule) + 2)

        logs = assert_every_attempt_logged(org_a, provider="cliniko", resource="patients", attempts=attempts,
                                           before=before)
        lagging = frozenset({int(changed)}) if changed is not None else frozenset()
        assert_database_equals_server(org_a, stub, skipped=skipped, lagging=lagging)
        if poison is not None:
            assert sum(log.failed_count for log in logs) >= 1
        else:
            assert all(log.failed_count == 0 for log in logs)

        if change is not None:  # the next scheduled run, with no faults, settles what changed during these
            stub.clear_faults()
            assert run(org_a, client).status == SyncStatus.SUCCEEDED
            assert_database_equals_server(org_a, stub, skipped=skipped)


APPOINTMENT_PATHS = ("", "/v1/individual_appointments", "/v1/individual_appointments/cancelled",
                     "/v1/individual_appointments/deleted")
APPOINTMENT_CHANGES = st.none() | st.builds(Change, kind=st.sampled_from(("edit_appointment", "cancel_appointment",
                                                                          "delete_appointment")),
                                            patient=st.integers(0, 99), after_page=st.integers(1, 4))


@settings(FAULT_SETTINGS, max_examples=20)  # the same paging as the patients' streams; these add the links
@given(schedule=schedules(APPOINTMENT_PATHS), change=APPOINTMENT_CHANGES)
def test_any_fault_schedule_ends_with_the_appointments_equal_to_cliniko(org_a, schedule, change):
    with ClinikoStub(api_keys=[API_KEY], rate_limit_per_minute=None) as stub, rolled_back():
        stub.seed(patients=80, appointments_per_patient=3, seed=23)  # 240 appointments: three pages
        client = client_for(stub)
        run(org_a, client, "patients")
        live = sorted((a for a in stub.all_appointments() if not a["cancelled_at"]),
                      key=lambda a: (a["updated_at"], int(a["id"])))
        changed = live[change.patient]["id"] if change is not None else None
        on_page = arm(stub, schedule, change=(lambda: apply(change, stub, changed)) if change else None,
                      after_page=change.after_page if change else 0)
        before = log_ids(org_a, "cliniko")

        attempts = run_until_success(lambda: run(org_a, client, "appointments", on_page=on_page),
                                     attempts=len(schedule) + 2)

        assert_every_attempt_logged(org_a, provider="cliniko", resource="appointments", attempts=attempts,
                                    before=before)
        assert_appointments_equal_server(org_a, stub, lagging=frozenset({int(changed)}) if changed else frozenset())
        if change is not None:
            stub.clear_faults()
            assert run(org_a, client, "appointments").status == SyncStatus.SUCCEEDED
            assert_appointments_equal_server(org_a, stub)


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_page_resumes_exactly_and_its_lock_does_not_block_the_next_run(org_a):
    with ClinikoStub(api_keys=[API_KEY], rate_limit_per_minute=None) as stub:
        stub.seed(patients=PATIENTS, appointments_per_patient=0, seed=22)
        with bind_organization(org_a):
            credential_set(organization=org_a, provider="cliniko", secret=API_KEY, base_url=stub.base_url)

        # Two pages written, the third held by the stand-in: the worker dies waiting for it.
        kill_mid_page("patients.jobs.sync_cliniko", str(org_a.pk), "patients", stub=stub, held_request=2)

        with bind_organization(org_a):
            killed = SyncLog.objects.get(provider="cliniko")
            written = Contact.objects.count()
        assert (killed.status, killed.fetched_count, killed.finished_at) == (SyncStatus.RUNNING, written, None)
        assert 100 < written <= 200  # two pages
        stub.reset_log()

        resumed = run(org_a, client_for(stub))

        assert resumed.status == SyncStatus.SUCCEEDED
        assert resumed.fetched_count < PATIENTS  # from the checkpoint, not from the start
        assert_database_equals_server(org_a, stub)
        with bind_organization(org_a):
            killed.refresh_from_db()
        assert killed.status == SyncStatus.FAILED and killed.error.startswith("interrupted")
