-- Where a rejected message came from, when its source can name it again (a file replay:
-- file, line and a hash of the line). Replaying the same file stores each rejection once;
-- live streams leave it NULL and every rejection is kept.
ALTER TABLE market_rejections ADD COLUMN origin text;
CREATE UNIQUE INDEX market_rejections_origin ON market_rejections (feed, origin)
    WHERE origin IS NOT NULL;
