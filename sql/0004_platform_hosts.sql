-- The platform from the host a fetch would reach: spaces the download stage strips around the
-- URL are ignored, userinfo ends at the last '@', and a trailing dot (the DNS root) is dropped.
CREATE OR REPLACE FUNCTION mediad_platform(url text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN host ~ '(^|\.)(twitter\.com|x\.com|twimg\.com|t\.co)$' THEN 'twitter'
        WHEN host ~ '(^|\.)(facebook\.com|fb\.com|fbcdn\.net|fbsbx\.com|fb\.watch)$' THEN 'facebook'
        WHEN host ~ '(^|\.)(instagram\.com|cdninstagram\.com)$' THEN 'instagram'
        WHEN host ~ '(^|\.)(linkedin\.com|licdn\.com)$' THEN 'linkedin'
        WHEN host ~ '(^|\.)(tiktok\.com|tiktokcdn\.com|tiktokcdn-us\.com|tiktokv\.com)$' THEN 'tiktok'
        ELSE 'other'
    END
    FROM (SELECT rtrim(lower(substring(btrim(url)
        FROM '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#]*@)?([^/:?#@]+)')), '.') AS host) AS h
$$;
