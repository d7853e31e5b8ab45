with counted as (
    select periods.*
    from {{ ref('fct_idle_periods') }} as periods
    join {{ ref('fct_trips') }} as trips using (trip_id)
    where trips.is_duplicate_of is null
)

select
    counted.vehicle_id,
    counted.started_at,
    round(counted.duration_s / 60, 1) as minutes,
    counted.source,
    coalesce(
        counted.address,
        (
            select other.address
            from {{ ref('fct_idle_periods') }} as other
            where other.vehicle_id = counted.vehicle_id
                and other.source <> counted.source
                and other.address is not null
                and other.started_at < counted.ended_at
                and other.ended_at > counted.started_at
            order by abs(epoch(other.started_at) - epoch(counted.started_at)),
                other.source
            limit 1
        )
    ) as address
from counted
order by counted.duration_s desc, counted.started_at, counted.vehicle_id
limit 10
