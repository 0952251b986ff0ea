"""What must hold before anything is published: the data checks inside a step's transaction (step),
the source checks before the first write (source), volumes against history (volume), the shrink guard."""
