-- Deterministic synthetic data for the demo HospitalDB (staging schema).
--
-- Generated inside the server with generate_series, so a million visits load in
-- seconds. Inputs come as settings, set by flows/demo_db.py as parameters:
--   hospitaldb_demo.visits  number of visits
--   hospitaldb_demo.seed    random seed (same seed, same data)
-- Patients are drawn with a squared-uniform skew, so a few patients have many
-- visits and most have a handful. Visits span the four years up to yesterday (the last
-- visit is always yesterday's), so the source checks see a fresh load; no date lies in
-- the future.

SELECT setseed((current_setting('hospitaldb_demo.seed')::bigint % 1000) / 1000.0);

INSERT INTO staging.branches (branch_id, branch_name, city, opened_on)
VALUES (1, 'Central General', 'Springfield', '1998-03-01'),
       (2, 'Northside Clinic', 'Springfield', '2005-09-15'),
       (3, 'Riverside Medical', 'Shelbyville', '2009-01-10'),
       (4, 'Lakeview Hospital', 'Ogdenville', '2012-06-01'),
       (5, 'Harbor Health', 'Capital City', '2014-11-20'),
       (6, 'Westbrook Care', 'North Haverbrook', '2017-04-03'),
       (7, 'Eastgate Children''s', 'Capital City', '2019-08-12'),
       (8, 'Summit Orthopedics', 'Brockway', '2021-02-01');

INSERT INTO staging.doctors (doctor_id, branch_id, full_name, specialty)
SELECT d,
       (d - 1) % 8 + 1,
       'Dr. ' || (ARRAY['Avery','Blake','Casey','Devon','Emerson','Finley','Harper','Jordan','Kendall','Logan'])[1 + (d * 7) % 10]
              || ' ' || (ARRAY['Nguyen','Patel','Garcia','Kim','Okafor','Schmidt','Rossi','Silva','Cohen','Novak','Haddad','Jensen'])[1 + (d * 5) % 12],
       (ARRAY['general practice','cardiology','pediatrics','orthopedics','emergency medicine','oncology','neurology','dermatology'])[1 + (d * 3) % 8]
FROM generate_series(1, 64) AS d;

INSERT INTO staging.patients (patient_id, full_name, birth_date, sex, home_branch_id, registered_on)
SELECT p,
       (ARRAY['Ana','Ben','Chloe','David','Elif','Farid','Grace','Hugo','Ines','Jamal','Kira','Liam','Mei','Noah','Olga','Priya'])[1 + floor(random() * 16)::int]
       || ' ' || (ARRAY['Adams','Brown','Clark','Diaz','Evans','Fischer','Gomez','Hall','Ito','Jones','Khan','Lopez','Moore','Ng','Owens','Park'])[1 + floor(random() * 16)::int],
       date '1932-01-01' + floor(random() * 33000)::int,
       (ARRAY['F','M','F','M','X'])[1 + floor(random() * 5)::int],
       1 + floor(random() * 8)::int,
       date '2018-01-01' + floor(random() * 1600)::int
FROM generate_series(1, greatest(50, current_setting('hospitaldb_demo.visits')::int / 8)) AS p;

INSERT INTO staging.visits (visit_id, patient_id, doctor_id, branch_id, visit_date, visit_type)
SELECT v,
       1 + floor(power(random(), 2) * (SELECT count(*) FROM staging.patients))::int,
       doctor_id,
       (doctor_id - 1) % 8 + 1,
       CASE WHEN v = current_setting('hospitaldb_demo.visits')::int THEN current_date - 1
            ELSE current_date - 1461 + floor(random() * 1461)::int END,
       CASE WHEN kind < 0.62 THEN 'outpatient'
            WHEN kind < 0.80 THEN 'follow_up'
            WHEN kind < 0.93 THEN 'emergency'
            ELSE 'inpatient' END
FROM (
    SELECT v, 1 + floor(random() * 64)::int AS doctor_id, random() AS kind
    FROM generate_series(1, current_setting('hospitaldb_demo.visits')::int) AS v
) AS drawn;

-- One to three billing lines a visit; inpatient stays cost the most.
INSERT INTO staging.billing (billing_id, visit_id, service_code, amount, status, billed_on)
SELECT v.visit_id * 4 + line,
       v.visit_id,
       (ARRAY['CONSULT','LAB','IMAGING','PROCEDURE','PHARMACY','ROOM'])[1 + floor(random() * 6)::int],
       round((40 + random() * 460)::numeric
             * CASE v.visit_type WHEN 'inpatient' THEN 6 WHEN 'emergency' THEN 2.5 ELSE 1 END, 2),
       CASE WHEN s < 0.66 THEN 'paid'
            WHEN s < 0.76 THEN 'partially_paid'
            WHEN s < 0.93 THEN 'pending'
            ELSE 'denied' END,
       least(v.visit_date + floor(random() * 4)::int, current_date - 1)
FROM staging.visits AS v
CROSS JOIN LATERAL generate_series(1, 1 + (v.visit_id % 7 + v.patient_id % 5) % 3) AS line
CROSS JOIN LATERAL (SELECT random() + 0 * v.visit_id AS s) AS status_draw;

-- Paid lines are settled in full (some in two instalments); partially paid lines
-- received 20-80%.
INSERT INTO staging.payments (payment_id, billing_id, amount, paid_on, method)
SELECT b.billing_id * 2 + part,
       b.billing_id,
       CASE WHEN b.status = 'partially_paid' THEN round(b.amount * (0.2 + random() * 0.6)::numeric, 2)
            WHEN instalments = 1 THEN b.amount
            WHEN part = 1 THEN round(b.amount / 2, 2)
            ELSE b.amount - round(b.amount / 2, 2) END,
       least(b.billed_on + 5 * part + floor(random() * 55)::int, current_date - 1),
       (ARRAY['insurance','insurance','card','cash','bank_transfer'])[1 + floor(random() * 5)::int]
FROM (
    SELECT billing_id, amount, status, billed_on,
           CASE WHEN status = 'paid' AND billing_id % 5 = 0 THEN 2 ELSE 1 END AS instalments
    FROM staging.billing
    WHERE status IN ('paid', 'partially_paid')
) AS b
CROSS JOIN LATERAL generate_series(1, b.instalments) AS part;
