-- projection_streams takes one update per stream per projector batch, more writes than any read
-- model. Its version column is not indexed, so with free room on the page PostgreSQL updates the row
-- in place (a HOT update: no index entry, less WAL). Half-full pages leave that room; only pages
-- written from now on get it, and a VACUUM FULL rewrites the rest.
ALTER TABLE projection_streams SET (fillfactor = 50);

---- create above / drop below ----

ALTER TABLE projection_streams RESET (fillfactor);
