"""slm_platform: small language models that replace hosted-LLM calls, on Dagster."""
