"""`digitpipe serve`: the registry's champion answers HTTP requests (digitpipe.serving.app), follows its alias
(follower), keeps what it answered for the page's feedback (requests) and checks served digits for drift."""
