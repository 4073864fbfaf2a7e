"""The HTTP endpoint served inside `mediad run`: metrics, health checks, the dashboard."""
