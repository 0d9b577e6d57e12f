"""Tests for bundle validation."""
