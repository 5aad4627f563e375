"""Embedded servers and process supervision for `make run` and `make test`.

No Django imports here: this starts the things Django needs.
"""
