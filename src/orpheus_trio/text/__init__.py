"""Text before it is spoken: splitting long text (:mod:`.split`), chunking text that arrives
as it is written (:mod:`.chunker`, :mod:`.stream`) and the ordered long-text pipeline
(:mod:`.longtext`)."""
