"""The patient list's rows built in Python (patients/rendering.py) are the markup the template loop made."""

from __future__ import annotations

import uuid
import zoneinfo
from datetime import UTC, date, datetime

from django.template import engines
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from patients.rendering import patient_rows_html
from patients.selectors import PatientRow

# The loop _results.html had before the rows moved to Python: the reference the new code must equal.
TEMPLATE_LOOP = """{% for patient in patients %}<tr><td><a href="{% url 'patients:detail' patient.pk %}">{{ patient.last_name }}, {{ patient.first_name }}</a></td><td class="hide-sm">{{ patient.email }}</td><td class="hide-sm">{{ patient.phone_e164|default:patient.phone_raw }}</td><td>{{ patient.last_appointment_at|date:"j M Y"|default:"—" }}</td><td>{{ patient.next_appointment_at|date:"j M Y"|default:"—" }}</td><td>{% if patient.archived_at %}<span class="badge inactive">Archived</span>{% elif patient.cliniko_patient_id is None %}<span class="badge warn">Lead</span>{% elif patient.is_current %}<span class="badge">Active</span>{% else %}<span class="badge inactive">Inactive</span>{% endif %}</td></tr>{% endfor %}"""  # noqa: E501

HOSTILE_TEXT = st.text(alphabet=st.sampled_from(list("aZ ,.'\"<>&/=;—é\u200b")) | st.characters(), max_size=12)
MOMENTS = st.none() | st.datetimes(min_value=datetime(1901, 1, 1), max_value=datetime(2099, 12, 31),
                                  timezones=st.just(UTC))


def reference(patients: list[PatientRow]) -> str:
    return engines["django"].from_string(TEMPLATE_LOOP).render({"patients": patients})


patient_rows = st.builds(
    PatientRow, pk=st.uuids(), first_name=HOSTILE_TEXT, last_name=HOSTILE_TEXT, email=HOSTILE_TEXT,
    phone_e164=st.none() | HOSTILE_TEXT, phone_raw=HOSTILE_TEXT, date_of_birth=st.none() | st.dates(),
    cliniko_patient_id=st.none() | st.integers(min_value=1), archived_at=MOMENTS, last_appointment_at=MOMENTS,
    next_appointment_at=MOMENTS, is_current=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(patient_rows, max_size=4))
def test_rows_equal_the_template_loop_for_any_data(patients):
    assert patient_rows_html(patients) == reference(patients)


@settings(max_examples=50, deadline=None)
@given(st.lists(patient_rows, min_size=1, max_size=3), st.sampled_from(["Australia/Sydney", "Pacific/Chatham",
                                                                          "America/St_Johns"]))
def test_dates_are_shown_in_the_current_time_zone_as_the_date_filter_did(patients, zone):
    with timezone.override(zoneinfo.ZoneInfo(zone)):
        assert patient_rows_html(patients) == reference(patients)


def test_hostile_names_are_escaped():
    patient = PatientRow(pk=uuid.uuid4(), first_name='<script>alert("x")</script>', last_name="O'Brien & Co",
                         email="a@b.c\" onmouseover=\"x", phone_e164=None, phone_raw="<b>1</b>",
                         date_of_birth=date(1990, 1, 1), cliniko_patient_id=None, archived_at=None,
                         last_appointment_at=datetime(2026, 3, 5, 23, 30, tzinfo=UTC), next_appointment_at=None,
                         is_current=True)

    html = patient_rows_html([patient])

    assert "<script>" not in html and "<b>" not in html and 'onmouseover="x' not in html
    assert "O&#x27;Brien &amp; Co, &lt;script&gt;" in html
    assert "<td>5 Mar 2026</td><td>—</td>" in html and '<span class="badge warn">Lead</span>' in html
