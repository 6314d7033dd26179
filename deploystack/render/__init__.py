"""ProjectPlan -> files: compose.yaml from data, configs from jinja2, build contexts; atomic writes."""
