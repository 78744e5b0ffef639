"""Reports drawn from records and analyses: leaderboards (Markdown, CSV, HTML), tables, scaling figures."""
