"""The providers file every test platform serves, in process or as processes."""

from __future__ import annotations

from pathlib import Path


def write_providers(path: Path, *, mock_url: str, failing_url: str, dead_url: str) -> Path:
    """The providers file every test platform serves: most models on the mock upstream, some
    on a failing one and some where nothing listens."""
    path.write_text(
        f"""
providers:
  - name: mock
    base_url: {mock_url}/v1
    api_key_env: MOCK_KEY
    models:
      - {{id: mock/chat, upstream: chat-upstream}}
      - {{id: "deepseek-ai/deepseek-r1:671b", upstream: deepseek-reasoner}}
      - {{id: mock/complete, type: completion}}
      - {{id: mock/embed, type: embedding, upstream: embed-upstream}}
      - {{id: mock/rerank, type: rerank}}
      - {{id: mock/whisper, type: audio, upstream: whisper-upstream}}
      - {{id: mock/tts, type: tts, upstream: tts-upstream}}
      - {{id: mock/image, type: image, upstream: image-upstream, price: {{per_call: 0.04}}}}
      - {{id: team/physics-only, groups: [physics]}}
      - {{id: team/bob-only, groups: [], users: [bob]}}
      - {{id: failover/dead-first}}
      - {{id: failover/failing-first}}
  - name: claude-native
    base_url: {mock_url}/v1
    anthropic_base_url: {mock_url}
    api_key_env: MOCK_KEY
    models:
      - {{id: native/claude, upstream: claude-upstream}}
  - name: responses-native
    base_url: {mock_url}/v1
    responses_base_url: {mock_url}/v1
    api_key_env: MOCK_KEY
    models:
      - {{id: native/responses, upstream: responses-upstream}}
  - name: dead
    base_url: {dead_url}
    models:
      - {{id: failover/dead-first, weight: 1000000}}
      - {{id: failover/all-dead}}
  - name: failing
    base_url: {failing_url}/v1
    models:
      - {{id: failover/failing-first, weight: 1000000}}
      - {{id: failover/all-failing}}
  - name: wrong-key
    base_url: {mock_url}/v1
    api_key_env: WRONG_KEY
    models:
      - {{id: broken/wrong-provider-key}}
  - name: unconfigured
    preset: openai
    api_key_env: HEPAI_TEST_UNSET_KEY
    models:
      - {{id: openai/gpt-4o}}
"""
    )
    return path
