"""Training database general_hospital: departments, doctors, patients, appointments and prescriptions.

    python -c "from sqlcopilot_core.sample.hospital import DATABASE; print(len(DATABASE.examples))"
"""

from __future__ import annotations

import random

from sqlcopilot_core.sample.common import (
    CITIES, Rows, SampleDatabase, random_date, sometimes_null, unique_person_names, weighted_choice,
)

SCHEMA_SQL = """
CREATE TABLE departments (
    department_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    floor INTEGER NOT NULL
);
CREATE TABLE doctors (
    doctor_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    department_id INTEGER NOT NULL,
    position TEXT NOT NULL,
    years_experience INTEGER,
    FOREIGN KEY (department_id) REFERENCES departments (department_id)
);
CREATE TABLE patients (
    patient_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    birth_year INTEGER,
    gender TEXT,
    city TEXT,
    insurance_provider TEXT
);
CREATE TABLE appointments (
    appointment_id INTEGER PRIMARY KEY,
    patient_id INTEGER NOT NULL,
    doctor_id INTEGER NOT NULL,
    appointment_date DATE NOT NULL,
    reason TEXT,
    cost REAL,
    status TEXT NOT NULL,
    FOREIGN KEY (patient_id) REFERENCES patients (patient_id),
    FOREIGN KEY (doctor_id) REFERENCES doctors (doctor_id)
);
CREATE TABLE prescriptions (
    prescription_id INTEGER PRIMARY KEY,
    appointment_id INTEGER NOT NULL,
    medication TEXT NOT NULL,
    dosage_mg INTEGER,
    days INTEGER,
    FOREIGN KEY (appointment_id) REFERENCES appointments (appointment_id)
);
"""

# Per department: (floor, reasons for a visit, medications prescribed there). Tying reasons and medications
# to departments keeps the data plausible, and gives questions such as "never prescribed in Pediatrics" answers.
DEPARTMENTS = {
    "Cardiology": (3, ["chest pain", "high blood pressure", "check-up"], ["Atorvastatin", "Lisinopril", "Aspirin"]),
    "Neurology": (4, ["headache", "dizziness", "check-up"], ["Sumatriptan", "Ibuprofen"]),
    "Pediatrics": (2, ["fever", "vaccination", "check-up"], ["Amoxicillin", "Paracetamol", "Cetirizine"]),
    "Orthopedics": (1, ["fracture", "back pain", "follow-up"], ["Ibuprofen", "Paracetamol"]),
    "Oncology": (5, ["follow-up", "chemotherapy", "check-up"], ["Ondansetron", "Dexamethasone"]),
    "Emergency": (0, ["chest pain", "fracture", "fever"], ["Paracetamol", "Ibuprofen", "Amoxicillin"]),
    "Dermatology": (2, ["rash", "skin check", "follow-up"], ["Cetirizine", "Hydrocortisone"]),
}
DOSAGES_MG = {
    "Atorvastatin": [10, 20, 40], "Lisinopril": [5, 10, 20], "Aspirin": [75, 100], "Sumatriptan": [50, 100],
    "Ibuprofen": [200, 400, 600], "Amoxicillin": [250, 500], "Paracetamol": [500, 1000], "Cetirizine": [5, 10],
    "Ondansetron": [4, 8], "Dexamethasone": [2, 4], "Hydrocortisone": [10, 20],
}
INSURERS = ["MediCare Plus", "HealthFirst", "CareShield", "National Health"]
EXPERIENCE_YEARS = {"Resident": (1, 5), "Registrar": (4, 12), "Consultant": (10, 35)}


def make_doctors(rng: random.Random, names: list[str]) -> list[tuple]:
    doctors = []
    for doctor_id, name in enumerate(names, start=1):
        # The first doctors cover every department once, so none is left unstaffed.
        department_id = doctor_id if doctor_id <= len(DEPARTMENTS) else rng.randint(1, len(DEPARTMENTS))
        position = weighted_choice(rng, {"Consultant": 35, "Registrar": 35, "Resident": 30})
        experience = sometimes_null(rng, rng.randint(*EXPERIENCE_YEARS[position]), 0.05)
        doctors.append((doctor_id, name, department_id, position, experience))
    return doctors


def make_visits(rng: random.Random, patients: list[tuple], doctors: list[tuple]) -> tuple[list[tuple], list[tuple]]:
    department_info = list(DEPARTMENTS.values())
    appointments, prescriptions = [], []
    for appointment_id in range(1, 421):
        doctor = rng.choice(doctors)
        _floor, reasons, medications = department_info[doctor[2] - 1]
        status = weighted_choice(rng, {"completed": 80, "cancelled": 12, "no-show": 8})
        appointments.append((appointment_id, rng.choice(patients[:150])[0], doctor[0],
                             random_date(rng, "2023-06-01", "2024-06-30"), rng.choice(reasons),
                             round(rng.uniform(40, 400), 2), status))
        prescription_count = weighted_choice(rng, {0: 35, 1: 50, 2: 15}) if status == "completed" else 0
        for medication in rng.sample(medications, prescription_count):
            prescriptions.append((len(prescriptions) + 1, appointment_id, medication,
                                  rng.choice(DOSAGES_MG[medication]), rng.choice([5, 7, 10, 14, 30, 90])))
    return appointments, prescriptions


def make_rows(rng: random.Random) -> Rows:
    departments = [(i, name, info[0]) for i, (name, info) in enumerate(DEPARTMENTS.items(), start=1)]
    names = unique_person_names(rng, 188)
    doctors = make_doctors(rng, names[:28])
    patients = [(patient_id, name, sometimes_null(rng, rng.randint(1935, 2022), 0.03), rng.choice(["F", "M"]),
                 rng.choice(CITIES), sometimes_null(rng, rng.choice(INSURERS), 0.12))
                for patient_id, name in enumerate(names[28:], start=1)]
    appointments, prescriptions = make_visits(rng, patients, doctors)
    return {"departments": departments, "doctors": doctors, "patients": patients, "appointments": appointments,
            "prescriptions": prescriptions}


EXAMPLES = (
    ("How many doctors work at the hospital?", "SELECT count(*) FROM doctors"),
    ("List the names of all departments and the floors they are on.", "SELECT name, floor FROM departments"),
    ("What are the names of patients born before 1950?", "SELECT name FROM patients WHERE birth_year < 1950"),
    ("How many patients have no insurance provider?",
     "SELECT count(*) FROM patients WHERE insurance_provider IS NULL"),
    ("What is the average cost of an appointment?", "SELECT avg(cost) FROM appointments"),
    ("Which doctors have more than 20 years of experience?", "SELECT name FROM doctors WHERE years_experience > 20"),
    ("How many appointments were cancelled?", "SELECT count(*) FROM appointments WHERE status = 'cancelled'"),
    ("How many patients does each insurance provider cover?",
     "SELECT insurance_provider, count(*) FROM patients WHERE insurance_provider IS NOT NULL "
     "GROUP BY insurance_provider"),
    ("Which department is on the highest floor?", "SELECT name FROM departments ORDER BY floor DESC LIMIT 1"),
    ("List the names of the doctors in the Cardiology department.",
     "SELECT T1.name FROM doctors AS T1 JOIN departments AS T2 ON T1.department_id = T2.department_id "
     "WHERE T2.name = 'Cardiology'"),
    ("How many doctors are there in each department?",
     "SELECT T2.name, count(*) FROM doctors AS T1 JOIN departments AS T2 ON T1.department_id = T2.department_id "
     "GROUP BY T1.department_id"),
    ("Which doctor has had the most appointments?",
     "SELECT T1.name FROM doctors AS T1 JOIN appointments AS T2 ON T1.doctor_id = T2.doctor_id "
     "GROUP BY T1.doctor_id ORDER BY count(*) DESC LIMIT 1"),
    ("What are the names of the patients who came in with chest pain?",
     "SELECT DISTINCT T1.name FROM patients AS T1 JOIN appointments AS T2 ON T1.patient_id = T2.patient_id "
     "WHERE T2.reason = 'chest pain'"),
    ("Which patients have never had an appointment?",
     "SELECT name FROM patients WHERE patient_id NOT IN (SELECT patient_id FROM appointments)"),
    ("What is the total cost of completed appointments in each department?",
     "SELECT T3.name, sum(T1.cost) FROM appointments AS T1 JOIN doctors AS T2 ON T1.doctor_id = T2.doctor_id "
     "JOIN departments AS T3 ON T2.department_id = T3.department_id WHERE T1.status = 'completed' "
     "GROUP BY T3.department_id"),
    ("Which medications were prescribed more than 25 times?",
     "SELECT medication FROM prescriptions GROUP BY medication HAVING count(*) > 25"),
    ("Which patients have been prescribed Atorvastatin?",
     "SELECT DISTINCT T1.name FROM patients AS T1 JOIN appointments AS T2 ON T1.patient_id = T2.patient_id "
     "JOIN prescriptions AS T3 ON T2.appointment_id = T3.appointment_id WHERE T3.medication = 'Atorvastatin'"),
    ("For each medication, how many days does a prescription last on average?",
     "SELECT medication, avg(days) FROM prescriptions GROUP BY medication"),
    ("Which doctors have more years of experience than the average doctor?",
     "SELECT name FROM doctors WHERE years_experience > (SELECT avg(years_experience) FROM doctors)"),
    ("Which cities have patients insured by HealthFirst and also patients insured by CareShield?",
     "SELECT city FROM patients WHERE insurance_provider = 'HealthFirst' "
     "INTERSECT SELECT city FROM patients WHERE insurance_provider = 'CareShield'"),
    ("Give the names of doctors who are consultants or who work in Neurology.",
     "SELECT name FROM doctors WHERE position = 'Consultant' UNION SELECT T1.name FROM doctors AS T1 "
     "JOIN departments AS T2 ON T1.department_id = T2.department_id WHERE T2.name = 'Neurology'"),
    ("Which medications have never been prescribed by a Pediatrics doctor?",
     "SELECT medication FROM prescriptions EXCEPT SELECT T1.medication FROM prescriptions AS T1 "
     "JOIN appointments AS T2 ON T1.appointment_id = T2.appointment_id "
     "JOIN doctors AS T3 ON T2.doctor_id = T3.doctor_id "
     "WHERE T3.department_id = (SELECT department_id FROM departments WHERE name = 'Pediatrics')"),
    ("How many appointments were there in January 2024?",
     "SELECT count(*) FROM appointments WHERE appointment_date LIKE '2024-01-%'"),
    ("List the different reasons patients gave for their appointments.", "SELECT DISTINCT reason FROM appointments"),
    ("What is the most common reason for an appointment?",
     "SELECT reason FROM appointments GROUP BY reason ORDER BY count(*) DESC LIMIT 1"),
    ("Which patients have seen at least three different doctors?",
     "SELECT T1.name FROM patients AS T1 JOIN appointments AS T2 ON T1.patient_id = T2.patient_id "
     "GROUP BY T1.patient_id HAVING count(DISTINCT T2.doctor_id) >= 3"),
    ("Show the name and position of every doctor, from the most to the least experienced.",
     "SELECT name, position FROM doctors ORDER BY years_experience DESC"),
    ("What is the largest dosage prescribed for each medication?",
     "SELECT medication, max(dosage_mg) FROM prescriptions GROUP BY medication"),
    ("What were the dates and costs of the appointments of patients from Lisbon?",
     "SELECT T2.appointment_date, T2.cost FROM patients AS T1 JOIN appointments AS T2 "
     "ON T1.patient_id = T2.patient_id WHERE T1.city = 'Lisbon'"),
    ("How many female patients live in Madrid?",
     "SELECT count(*) FROM patients WHERE gender = 'F' AND city = 'Madrid'"),
)

DATABASE = SampleDatabase("general_hospital", "train", 404, SCHEMA_SQL, make_rows, EXAMPLES)
