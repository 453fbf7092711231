"""The Responses API below its routes, one module per job.

- `errors`: the 404/409/413/503 of stored objects and turns;
- `paging`: stored input items and their pages;
- `turn`: one turn being prepared (continuation, run lock, saved state, task) and stored;
- `protocol`: the Responses parts of the serving pipeline (request -> run, stream writer, body);
- `stored`: the routes' work on stored responses and conversations.
"""
