-- One database per service: no service reads another's tables.
CREATE DATABASE auth;
CREATE DATABASE course;
CREATE DATABASE review;
CREATE DATABASE notification;
CREATE DATABASE analytics;
