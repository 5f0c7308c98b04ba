"""Writes tests/data/inspection.xlsx: a site inspection as a form designer writes it.

Groups, a repeat of meter readings with their sum, skip logic, constraints
with messages, English and Portuguese, a photo and a signature. The .xlsx is
committed; rerun after changing this file:

    .venv/bin/python tests/data/make_inspection_xlsform.py
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from openpyxl import Workbook

HERE = Path(__file__).resolve().parent
OUT = HERE / "inspection.xlsx"

SURVEY_HEADER = [
    "type",
    "name",
    "label::English (en)",
    "label::Português (pt)",
    "hint::English (en)",
    "hint::Português (pt)",
    "required",
    "required_message::English (en)",
    "required_message::Português (pt)",
    "relevant",
    "constraint",
    "constraint_message::English (en)",
    "constraint_message::Português (pt)",
    "calculation",
    "default",
    "read_only",
    "appearance",
]

# (type, name, en, pt, extra columns)
SURVEY: list[tuple[str, str, str, str, dict[str, str]]] = [
    ("begin group", "site", "Site", "Local", {}),
    (
        "text",
        "site_name",
        "Site name",
        "Nome do local",
        {
            "hint::English (en)": "As on the sign at the gate",
            "hint::Português (pt)": "Como na placa do portão",
            "required": "yes",
        },
    ),
    ("date", "inspection_date", "Date of inspection", "Data da inspeção", {"required": "yes"}),
    ("time", "arrival_time", "Arrival time", "Hora de chegada", {}),
    (
        "select_one yes_no",
        "site_safe",
        "Is the site safe to work on?",
        "O local é seguro para trabalhar?",
        {"required": "yes"},
    ),
    (
        "text",
        "hazard",
        "Describe the hazard",
        "Descreva o perigo",
        {
            "required": "yes",
            "required_message::English (en)": "Say what makes the site unsafe",
            "required_message::Português (pt)": "Diga o que torna o local inseguro",
            "relevant": "${site_safe} = 'no'",
            "appearance": "multiline",
        },
    ),
    ("select_multiple ppe", "ppe", "Protective equipment worn", "EPI usado", {}),
    ("end group", "", "", "", {}),
    (
        "begin group",
        "equipment",
        "Equipment",
        "Equipamento",
        {"relevant": "${site_safe} = 'yes'"},
    ),
    (
        "integer",
        "meters_expected",
        "How many meters are on site?",
        "Quantos medidores há no local?",
        {
            "constraint": ". >= 0 and . <= 50",
            "constraint_message::English (en)": "Between 0 and 50 meters",
            "constraint_message::Português (pt)": "Entre 0 e 50 medidores",
            "default": "1",
        },
    ),
    ("begin repeat", "readings", "Meter readings", "Leituras dos medidores", {}),
    ("text", "meter", "Meter", "Medidor", {"required": "yes"}),
    (
        "decimal",
        "reading",
        "Reading (kWh)",
        "Leitura (kWh)",
        {
            "required": "yes",
            "constraint": ". >= 0 and . <= 500",
            "constraint_message::English (en)": "A reading is between 0 and 500 kWh",
            "constraint_message::Português (pt)": "Uma leitura fica entre 0 e 500 kWh",
        },
    ),
    ("select_one ok_fault", "condition", "Condition", "Estado", {}),
    (
        "text",
        "fault",
        "What is wrong?",
        "O que está errado?",
        {"relevant": "${condition} = 'fault'", "required": "yes"},
    ),
    ("end repeat", "", "", "", {}),
    ("calculate", "total_reading", "", "", {"calculation": "sum(${reading})"}),
    (
        "note",
        "total_note",
        "Total of the readings: ${total_reading} kWh",
        "Total das leituras: ${total_reading} kWh",
        {},
    ),
    ("end group", "", "", "", {}),
    ("begin group", "sign_off", "Sign-off", "Encerramento", {}),
    ("image", "site_photo", "Photo of the site", "Foto do local", {"required": "yes"}),
    ("text", "notes", "Notes", "Observações", {"appearance": "multiline"}),
    (
        "acknowledge",
        "confirm",
        "I confirm this inspection is complete and true",
        "Confirmo que esta inspeção está completa e correta",
        {"required": "yes"},
    ),
    (
        "image",
        "signature",
        "Inspector's signature",
        "Assinatura do inspetor",
        {"required": "yes", "appearance": "signature"},
    ),
    ("end group", "", "", "", {}),
]

CHOICES = [
    ("yes_no", "yes", "Yes", "Sim"),
    ("yes_no", "no", "No", "Não"),
    ("ppe", "helmet", "Helmet", "Capacete"),
    ("ppe", "boots", "Safety boots", "Botas de segurança"),
    ("ppe", "gloves", "Insulated gloves", "Luvas isolantes"),
    ("ok_fault", "ok", "Working", "Funcionando"),
    ("ok_fault", "fault", "Faulty", "Com defeito"),
]


def build() -> Workbook:
    wb = Workbook()
    survey = wb.active
    assert survey is not None
    survey.title = "survey"
    survey.append(SURVEY_HEADER)
    for kind, name, en, pt, extra in SURVEY:
        cells = {"type": kind, "name": name, "label::English (en)": en, "label::Português (pt)": pt}
        cells.update(extra)
        survey.append([cells.get(h) or None for h in SURVEY_HEADER])
    choices = wb.create_sheet("choices")
    choices.append(["list_name", "name", "label::English (en)", "label::Português (pt)"])
    for row in CHOICES:
        choices.append(list(row))
    settings = wb.create_sheet("settings")
    settings.append(["form_id", "form_title", "version", "default_language"])
    settings.append(["site_inspection", "Site inspection", "2026120201", "English (en)"])
    # Fixed document dates: rerunning the script changes only what the form says.
    wb.properties.created = wb.properties.modified = datetime(2026, 12, 2)
    return wb


if __name__ == "__main__":
    build().save(OUT)
    print(f"wrote {OUT}")
