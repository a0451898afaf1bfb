-- Runs once, when the PostgreSQL volume is first created: a second database for MLflow's
-- backend store beside the study database (POSTGRES_DB).
CREATE DATABASE mlflow;
