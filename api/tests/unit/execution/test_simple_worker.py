"""Unit tests for simple_worker requirements installation."""

import json
import pytest
from unittest.mock import MagicMock, patch, call

from src.services.execution.simple_worker import _install_requirements_from_cache_sync


class TestInstallRequirementsFromCache:
    @patch("src.services.execution.simple_worker.subprocess.run")
    @patch("src.services.execution.simple_worker.redis.from_url")
    def test_installs_from_cache(self, mock_redis_factory, mock_subprocess):
        """Test successful installation from cached requirements."""
        # Setup mock Redis
        mock_client = MagicMock()
        cached = {"content": "flask==2.3.0\nrequests==2.31.0\n", "hash": "abc123"}
        mock_client.get.return_value = json.dumps(cached)
        mock_redis_factory.return_value = mock_client

        # Setup mock subprocess
        mock_subprocess.return_value = MagicMock(returncode=0, stdout="", stderr="")

        # Run
        _install_requirements_from_cache_sync("test-worker")

        # Verify pip was called
        assert mock_subprocess.called
        call_args = mock_subprocess.call_args
        assert "-m" in call_args[0][0]
        assert "pip" in call_args[0][0]
        assert "install" in call_args[0][0]
        assert "-r" in call_args[0][0]

    @patch("src.services.execution.simple_worker.redis.from_url")
    def test_handles_redis_unavailable(self, mock_redis_factory):
        """Test graceful handling when Redis is unavailable."""
        import redis

        mock_redis_factory.side_effect = redis.ConnectionError("Connection refused")

        # Should not raise
        _install_requirements_from_cache_sync("test-worker")

    @patch("src.services.execution.simple_worker.redis.from_url")
    def test_handles_empty_cache(self, mock_redis_factory):
        """Test handling when cache is empty."""
        mock_client = MagicMock()
        mock_client.get.return_value = None
        mock_redis_factory.return_value = mock_client

        # Should not raise
        _install_requirements_from_cache_sync("test-worker")

    @patch("src.services.execution.simple_worker.redis.from_url")
    def test_handles_empty_content(self, mock_redis_factory):
        """Test handling when cached content is empty."""
        mock_client = MagicMock()
        cached = {"content": "", "hash": "abc123"}
        mock_client.get.return_value = json.dumps(cached)
        mock_redis_factory.return_value = mock_client

        # Should not raise
        _install_requirements_from_cache_sync("test-worker")
