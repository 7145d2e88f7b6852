-- The MLflow tracking server keeps its own database beside the catalog.
CREATE DATABASE mlflow OWNER alphaswarm;
