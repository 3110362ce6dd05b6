"""review: course reviews. RPC: create_review, list_reviews."""
