"""Widgets and plots for live demos (one module per lesson)."""
