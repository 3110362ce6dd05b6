"""course: courses, enrollments and rating aggregates. RPC: create/list/get course, enroll,
list_enrollments, is_enrolled; handles ``review.created``."""
