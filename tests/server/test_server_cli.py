"""``mxbai-rerank serve`` option parsing (no model is loaded here; the server tests run the command)."""

from __future__ import annotations

from click.testing import CliRunner

from mxbai_rerank.cli import main

OPTIONS = {
    "--model": "MXBAI_RERANK_MODEL",
    "--host": "MXBAI_RERANK_HOST",
    "--port": "MXBAI_RERANK_PORT",
    "--api-key": "MXBAI_RERANK_API_KEY",
    "--device": "MXBAI_RERANK_DEVICE",
    "--dtype": "MXBAI_RERANK_DTYPE",
    "--max-batch-tokens": "MXBAI_RERANK_MAX_BATCH_TOKENS",
    "--max-client-batch-size": "MXBAI_RERANK_MAX_CLIENT_BATCH_SIZE",
    "--max-concurrent-requests": "MXBAI_RERANK_MAX_CONCURRENT_REQUESTS",
    "--served-model-name": "MXBAI_RERANK_SERVED_MODEL_NAME",
    "--payload-limit": "MXBAI_RERANK_PAYLOAD_LIMIT",
    "--max-text-chars": "MXBAI_RERANK_MAX_TEXT_CHARS",
    "--header-timeout": "MXBAI_RERANK_HEADER_TIMEOUT",
    "--body-timeout": "MXBAI_RERANK_BODY_TIMEOUT",
    "--graceful-shutdown-timeout": "MXBAI_RERANK_GRACEFUL_SHUTDOWN_TIMEOUT",
    "--compile": "MXBAI_RERANK_COMPILE",
}


def test_help_lists_every_option_with_its_environment_variable() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for option, env in OPTIONS.items():
        assert option in result.output and env in result.output, option
    assert "127.0.0.1" in result.output  # loopback by default


def test_model_from_the_environment_and_a_clear_load_error(tmp_path) -> None:
    missing = tmp_path / "no-such-model"
    result = CliRunner().invoke(main, ["serve"], env={"MXBAI_RERANK_MODEL": str(missing)})
    assert result.exit_code != 0
    assert str(missing) in result.output and "does not exist" in result.output


def test_invalid_limits_are_rejected_before_loading() -> None:
    result = CliRunner().invoke(main, ["serve", "--model", "x", "--max-concurrent-requests", "0"])
    assert result.exit_code == 2 and "--max-concurrent-requests" in result.output
    result = CliRunner().invoke(main, ["serve", "--model", "x"], env={"MXBAI_RERANK_PORT": "notaport"})
    assert result.exit_code == 2 and "--port" in result.output
