"""Shared test code that is not a fixture: hostile frames, a fake MES webhook receiver,
Inspector wrappers, topic names. The servers themselves live in the supported package infra/.
"""
