SELECT 1;
end;