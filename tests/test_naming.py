import pytest

from agents_app.protocol.naming import agent_segment


@pytest.mark.parametrize(
    ("class_name", "segment"),
    [
        ("ChatAgent", "chat-agent"),
        ("MyAIAgent", "my-a-i-agent"),
        ("TestOAuthAgent", "test-o-auth-agent"),
        ("MYAGENT", "myagent"),
        ("MY_AGENT", "my-agent"),
        ("my_agent", "my-agent"),
        ("CaseSensitiveAgent", "case-sensitive-agent"),
    ],
)
def test_class_names_become_the_segments_the_official_client_builds(class_name: str, segment: str) -> None:
    assert agent_segment(class_name) == segment
