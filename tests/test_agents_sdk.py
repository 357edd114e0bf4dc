"""A real agent framework against the Responses route: the OpenAI Agents SDK runs an agent
whose model calls a function tool and answers with its result, in process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)

from tests.inprocess import Account, App, Upstream


@pytest.fixture(autouse=True)
def no_tracing() -> Iterator[None]:
    """The SDK would send its traces to OpenAI; nothing leaves the machine here."""
    set_tracing_disabled(True)
    yield


async def test_an_agent_calls_a_function_tool_through_the_responses_route(
    app: App, account: Account, upstream: Upstream, unique
) -> None:
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"sunny in {city}"

    marker = unique("agent")
    async with app.openai(account.key, prefix="/v1") as client:
        agent = Agent(
            name="weather",
            instructions="Answer with the weather.",
            tools=[get_weather],
            model=OpenAIResponsesModel(model="mock/chat", openai_client=client),
            model_settings=ModelSettings(extra_body={"mock": {"tool_call": "once"}}),
        )
        result = await Runner.run(agent, f"Weather in Beijing? {marker}")
    assert asked == ["Beijing"]
    assert result.final_output == "word0 word1 word2 word3 word4"
    turns = [r["body"] for r in upstream.requests() if marker in str(r["body"])]
    assert len(turns) == 2
    assert turns[0]["tools"][0]["function"]["name"] == "get_weather"
    last = turns[1]["messages"]
    assert last[0] == {"role": "system", "content": "Answer with the weather."}
    assert last[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert last[-1]["role"] == "tool" and last[-1]["content"] == "sunny in Beijing"
