"""Market-data providers behind one adapter interface (:class:`base.Provider`)."""
