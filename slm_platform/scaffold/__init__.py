"""`slm init`: scaffold a domain folder from a log of hosted-LLM calls (no Dagster here).

calls (read the log) -> roles (one per contract) -> verify (read back by the platform's reader) ->
plan (files and sizes) -> templates (file texts) -> create (write, load, publish).
"""

from slm_platform.scaffold.create import InitRefused, InitResult, init_domain

__all__ = ["InitRefused", "InitResult", "init_domain"]
