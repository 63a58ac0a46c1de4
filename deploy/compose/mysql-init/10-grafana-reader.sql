-- Run once by the MySQL image when its data volume is created (/docker-entrypoint-initdb.d).
-- A read-only user for Grafana's MySQL datasource (the work-time dashboards): dashboard
-- variables are interpolated into SQL, so Grafana gets SELECT and nothing else.
-- The password is the local stack's default; change it (and IOTFLOW_GRAFANA_MYSQL_PASSWORD in
-- full-stack.yml) for anything but a local machine.
CREATE USER IF NOT EXISTS 'grafana'@'%' IDENTIFIED BY 'grafana';
GRANT SELECT ON iotflow.* TO 'grafana'@'%';
