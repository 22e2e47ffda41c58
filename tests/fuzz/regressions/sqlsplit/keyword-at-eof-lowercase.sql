select 1;
  rollback