"""What a run tells people: alerts, notices, artifacts and the local summary, rendered from its outcome and delivered."""
