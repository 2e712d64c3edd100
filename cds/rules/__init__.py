"""Rules as data: YAML rule files -> validated specs -> durable_rules rulesets."""
