"""CDS Hooks 2.0 cards: models and rendering from rule templates."""
