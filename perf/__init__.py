"""The project's own measurements of itself (acceptance runs, overhead checks), apart from the product."""
