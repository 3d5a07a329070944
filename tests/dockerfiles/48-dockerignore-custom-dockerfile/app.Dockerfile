ARG BASE=localhost:5000/debian:bookworm
FROM $BASE
COPY . /ctx/
