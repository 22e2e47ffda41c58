CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$
BEGIN
  RETURN 1; -- ;
END
$body$;
SELECT $$a;b$$, $1;
