"""Training database college_courses: departments, instructors, courses, students and their enrollments.

    python -c "from sqlcopilot_core.sample.school import DATABASE; print(len(DATABASE.examples))"
"""

from __future__ import annotations

import random

from sqlcopilot_core.sample.common import Rows, SampleDatabase, sometimes_null, unique_person_names, weighted_choice

SCHEMA_SQL = """
CREATE TABLE departments (
    dept_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    building TEXT,
    budget REAL
);
CREATE TABLE instructors (
    instructor_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    dept_id INTEGER NOT NULL,
    salary REAL,
    hire_year INTEGER,
    FOREIGN KEY (dept_id) REFERENCES departments (dept_id)
);
CREATE TABLE courses (
    course_id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    dept_id INTEGER NOT NULL,
    credits INTEGER NOT NULL,
    instructor_id INTEGER,
    FOREIGN KEY (dept_id) REFERENCES departments (dept_id),
    FOREIGN KEY (instructor_id) REFERENCES instructors (instructor_id)
);
CREATE TABLE students (
    student_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    major_dept_id INTEGER,
    year_of_study INTEGER NOT NULL,
    gpa REAL,
    FOREIGN KEY (major_dept_id) REFERENCES departments (dept_id)
);
CREATE TABLE enrollments (
    enrollment_id INTEGER PRIMARY KEY,
    student_id INTEGER NOT NULL,
    course_id INTEGER NOT NULL,
    semester TEXT NOT NULL,
    grade TEXT,
    FOREIGN KEY (student_id) REFERENCES students (student_id),
    FOREIGN KEY (course_id) REFERENCES courses (course_id)
);
"""

DEPARTMENTS = [  # (name, building); Philosophy comes last and offers no courses and has no students
    ("Computer Science", "Turing Hall"), ("Mathematics", "Noether Building"), ("Physics", "Curie Hall"),
    ("Biology", "Darwin Building"), ("History", "Gibbon Hall"), ("Economics", "Keynes House"),
    ("Literature", "Austen Hall"), ("Philosophy", "Hume Annex"),
]
COURSES = {
    "Computer Science": ["Introduction to Programming", "Data Structures", "Algorithms", "Databases",
                         "Operating Systems", "Computer Networks", "Machine Learning"],
    "Mathematics": ["Calculus I", "Calculus II", "Linear Algebra", "Probability", "Number Theory", "Real Analysis"],
    "Physics": ["Classical Mechanics", "Electromagnetism", "Quantum Mechanics", "Thermodynamics", "Astrophysics"],
    "Biology": ["Cell Biology", "Genetics", "Ecology", "Microbiology", "Evolution"],
    "History": ["Ancient Civilizations", "Medieval Europe", "Modern World History", "History of Science"],
    "Economics": ["Microeconomics", "Macroeconomics", "Econometrics", "Game Theory", "Public Finance"],
    "Literature": ["Poetry Workshop", "The Novel", "Shakespeare", "World Literature"],
}
SEMESTERS = ["Fall 2023", "Spring 2024", "Fall 2024"]
TEACHING_DEPTS = range(1, len(COURSES) + 1)


def make_staff(rng: random.Random, names: list[str]) -> tuple[list[tuple], list[tuple], list[tuple]]:
    departments = [(dept_id, name, building, float(rng.randrange(400_000, 2_500_000, 10_000)))
                   for dept_id, (name, building) in enumerate(DEPARTMENTS, start=1)]
    instructors = []
    for instructor_id, name in enumerate(names, start=1):
        # The first instructors cover every department once, so none is left without staff.
        dept_id = instructor_id if instructor_id <= len(DEPARTMENTS) else rng.choice(TEACHING_DEPTS)
        salary = sometimes_null(rng, float(rng.randrange(55_000, 140_000, 500)), 0.05)
        instructors.append((instructor_id, name, dept_id, salary, rng.randint(1995, 2023)))
    courses = []
    for dept_id, titles in enumerate(COURSES.values(), start=1):
        staff = [instructor[0] for instructor in instructors if instructor[2] == dept_id]
        for title in titles:
            credits = weighted_choice(rng, {2: 15, 3: 45, 4: 30, 5: 10})
            courses.append((len(courses) + 1, title, dept_id, credits, sometimes_null(rng, rng.choice(staff), 0.1)))
    return departments, instructors, courses


def make_rows(rng: random.Random) -> Rows:
    names = unique_person_names(rng, 180)
    departments, instructors, courses = make_staff(rng, names[:30])
    students = [(student_id, name, rng.choice(TEACHING_DEPTS), rng.randint(1, 4),
                 sometimes_null(rng, round(rng.uniform(2.0, 4.0), 2), 0.08))
                for student_id, name in enumerate(names[30:], start=1)]
    enrolled_pairs = sorted(rng.sample([(s[0], c[0]) for s in students[:140] for c in courses], 450))
    enrollments = []
    for enrollment_id, (student_id, course_id) in enumerate(enrolled_pairs, start=1):
        semester = rng.choice(SEMESTERS)
        grade = None if semester == "Fall 2024" else weighted_choice(rng, {"A": 25, "B": 35, "C": 25, "D": 10, "F": 5})
        enrollments.append((enrollment_id, student_id, course_id, semester, grade))
    return {"departments": departments, "instructors": instructors, "courses": courses, "students": students,
            "enrollments": enrollments}


EXAMPLES = (
    ("How many students are there?", "SELECT count(*) FROM students"),
    ("List the names of all departments and their buildings.", "SELECT name, building FROM departments"),
    ("What are the titles of courses worth 4 credits?", "SELECT title FROM courses WHERE credits = 4"),
    ("What is the average salary of instructors?", "SELECT avg(salary) FROM instructors"),
    ("Who are the five highest paid instructors, and what do they earn?",
     "SELECT name, salary FROM instructors ORDER BY salary DESC LIMIT 5"),
    ("How many students are in each year of study?",
     "SELECT year_of_study, count(*) FROM students GROUP BY year_of_study"),
    ("What is the name of the department with the largest budget?",
     "SELECT name FROM departments ORDER BY budget DESC LIMIT 1"),
    ("List the names of students with a GPA above 3.5.", "SELECT name FROM students WHERE gpa > 3.5"),
    ("How many students have no GPA recorded?", "SELECT count(*) FROM students WHERE gpa IS NULL"),
    ("Show the name of each instructor and the name of their department.",
     "SELECT T1.name, T2.name FROM instructors AS T1 JOIN departments AS T2 ON T1.dept_id = T2.dept_id"),
    ("How many courses does each department offer?",
     "SELECT T2.name, count(*) FROM courses AS T1 JOIN departments AS T2 ON T1.dept_id = T2.dept_id "
     "GROUP BY T1.dept_id"),
    ("Which departments offer more than 5 courses?",
     "SELECT T2.name FROM courses AS T1 JOIN departments AS T2 ON T1.dept_id = T2.dept_id "
     "GROUP BY T1.dept_id HAVING count(*) > 5"),
    ("Which departments do not offer any course?",
     "SELECT name FROM departments WHERE dept_id NOT IN (SELECT dept_id FROM courses)"),
    ("What are the titles of courses taught by instructors hired before 2005?",
     "SELECT T1.title FROM courses AS T1 JOIN instructors AS T2 ON T1.instructor_id = T2.instructor_id "
     "WHERE T2.hire_year < 2005"),
    ("Which courses have no instructor assigned?", "SELECT title FROM courses WHERE instructor_id IS NULL"),
    ("What is the average GPA of the students of each major department?",
     "SELECT T2.name, avg(T1.gpa) FROM students AS T1 JOIN departments AS T2 ON T1.major_dept_id = T2.dept_id "
     "GROUP BY T2.dept_id"),
    ("What are the names of the students enrolled in Databases?",
     "SELECT T1.name FROM students AS T1 JOIN enrollments AS T2 ON T1.student_id = T2.student_id "
     "JOIN courses AS T3 ON T2.course_id = T3.course_id WHERE T3.title = 'Databases'"),
    ("How many students took each course in Spring 2024?",
     "SELECT T2.title, count(*) FROM enrollments AS T1 JOIN courses AS T2 ON T1.course_id = T2.course_id "
     "WHERE T1.semester = 'Spring 2024' GROUP BY T1.course_id"),
    ("Which course has the most enrollments?",
     "SELECT T2.title FROM enrollments AS T1 JOIN courses AS T2 ON T1.course_id = T2.course_id "
     "GROUP BY T1.course_id ORDER BY count(*) DESC LIMIT 1"),
    ("Find the names of students who received an A in at least one course.",
     "SELECT DISTINCT T1.name FROM students AS T1 JOIN enrollments AS T2 ON T1.student_id = T2.student_id "
     "WHERE T2.grade = 'A'"),
    ("Which students are not enrolled in any course?",
     "SELECT name FROM students WHERE student_id NOT IN (SELECT student_id FROM enrollments)"),
    ("Which instructors earn more than the average instructor salary?",
     "SELECT name FROM instructors WHERE salary > (SELECT avg(salary) FROM instructors)"),
    ("Which students took courses in both Fall 2023 and Spring 2024?",
     "SELECT T1.name FROM students AS T1 JOIN enrollments AS T2 ON T1.student_id = T2.student_id "
     "WHERE T2.semester = 'Fall 2023' INTERSECT SELECT T1.name FROM students AS T1 JOIN enrollments AS T2 "
     "ON T1.student_id = T2.student_id WHERE T2.semester = 'Spring 2024'"),
    ("List the titles of courses that are worth 5 credits or are offered by the Mathematics department.",
     "SELECT title FROM courses WHERE credits = 5 UNION SELECT T1.title FROM courses AS T1 "
     "JOIN departments AS T2 ON T1.dept_id = T2.dept_id WHERE T2.name = 'Mathematics'"),
    ("Which departments have instructors but no students majoring in them?",
     "SELECT T1.name FROM departments AS T1 JOIN instructors AS T2 ON T1.dept_id = T2.dept_id "
     "EXCEPT SELECT T1.name FROM departments AS T1 JOIN students AS T2 ON T1.dept_id = T2.major_dept_id"),
    ("Show the name and total credits of every student enrolled in Fall 2024.",
     "SELECT T1.name, sum(T3.credits) FROM students AS T1 JOIN enrollments AS T2 ON T1.student_id = T2.student_id "
     "JOIN courses AS T3 ON T2.course_id = T3.course_id WHERE T2.semester = 'Fall 2024' GROUP BY T1.student_id"),
    ("Which distinct grades were given in Fall 2023?",
     "SELECT DISTINCT grade FROM enrollments WHERE semester = 'Fall 2023'"),
    ("List the fourth-year students from the highest GPA to the lowest.",
     "SELECT name FROM students WHERE year_of_study = 4 ORDER BY gpa DESC"),
    ("What is the highest instructor salary in each department?",
     "SELECT T2.name, max(T1.salary) FROM instructors AS T1 JOIN departments AS T2 ON T1.dept_id = T2.dept_id "
     "GROUP BY T1.dept_id"),
    ("How many instructors were hired after 2015?", "SELECT count(*) FROM instructors WHERE hire_year > 2015"),
    ("What are the names of instructors who teach more than one course?",
     "SELECT T2.name FROM courses AS T1 JOIN instructors AS T2 ON T1.instructor_id = T2.instructor_id "
     "GROUP BY T1.instructor_id HAVING count(*) > 1"),
)

DATABASE = SampleDatabase("college_courses", "train", 303, SCHEMA_SQL, make_rows, EXAMPLES)
