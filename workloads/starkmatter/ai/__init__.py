"""AI analysis: cached, coalesced, validated answers from the model or an offline analyst."""
