"""Serving the promoted model: fetching it, the Helm release, and local vLLM."""
